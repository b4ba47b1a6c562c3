"""SceneWorld: a procedural, fully labelled world of the 80 COCO categories over stuff backgrounds.

Typical use::

    from fgdm.world import make_sample, SceneWorldDataset, export_dataset
    s = make_sample(0, seed=0, size=128)        # image, every condition, a grounded caption
    ds = SceneWorldDataset(100_000, size=128)    # renders on the fly, deterministic per index
"""

from .captions import Caption, Phrase, make_caption
from .categories import CATEGORIES, NUM_CLASSES, STUFF, THINGS, VOID_ID, Category, category, resolve_categories
from .conditions import (
    class_areas,
    decode_depth,
    decode_normals,
    decode_segmentation,
    decode_sketch,
    encode_depth,
    encode_normals,
    encode_segmentation,
    encode_sketch,
    normals_from_depth,
    resize_image,
    resize_labels,
)
from .dataset import SceneWorldDataset, collate, make_sample
from .export import export_dataset, read_samples
from .prompts import read_prompts
from .render import Render, render, sketch_from
from .scene import Scene, SceneObject, WorldConfig, sample_scene
from .vocab import ParsedPrompt, parse_prompt, prompt_categories

__all__ = [
    "CATEGORIES", "NUM_CLASSES", "STUFF", "THINGS", "VOID_ID", "Caption", "Category", "ParsedPrompt", "Phrase",
    "Render", "Scene", "SceneObject", "SceneWorldDataset", "WorldConfig", "category", "class_areas", "collate",
    "decode_depth", "decode_normals", "decode_segmentation", "decode_sketch", "encode_depth", "encode_normals",
    "encode_segmentation", "encode_sketch", "export_dataset", "make_caption", "make_sample", "normals_from_depth",
    "parse_prompt", "prompt_categories", "read_prompts", "read_samples", "render", "resize_image", "resize_labels",
    "resolve_categories", "sample_scene", "sketch_from",
]  # fmt: skip

"""Editing real images through an FG-DM graph.

1. **Extract** the segmentation map of the image with the judge (the condition extraction model).
2. Edit the map, either
   - **semantically**, by text: DDIM-invert the map through the seg factor with the source
     prompt, then regenerate it from that noise with the edited prompt (prompt swap on the
     inverted trajectory: ``replace`` a class by another, ``remove`` a class); or
   - **at object level**, with the map operations of :mod:`fgdm.editing.maps`.
3. **Re-render** with the image factor: at *pixel level* (default), the image factor is inverted
   with the real image and its original map, and the edited map is rendered from that noise, so
   the background is kept where the map did not change; or from fresh noise (``pixel=False``).

:func:`edit_metrics` measures what the issue asks: inversion reconstruction PSNR without an edit,
the judge's recall of the new classes in the edited region, and the PSNR of the unchanged region.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..models.judge import Judge
from ..pipelines.factor_graph import FactorGraphPipeline
from ..world.categories import category
from ..world.conditions import resize_image
from ..world.vocab import parse_prompt


def extract_map(judge: Judge, image: Image.Image, size: int) -> np.ndarray:
    """The judge's class-id map of ``image`` at ``size`` x ``size``."""
    return judge.segment_images([image], size)[0]


def edit_prompt(prompt: str, replace: dict[str, str] | None = None, remove: list[str] | None = None) -> str:
    """The prompt with classes swapped (``{"dog": "cat"}``) or removed (the noun, its article or
    number, and a dangling "and"/comma). Every named class must be mentioned by the prompt."""
    replace, remove = dict(replace or {}), list(remove or [])
    mentions = parse_prompt(prompt).mentions
    named = {m.category for m in mentions}
    for c in [*replace, *remove]:
        name = category(c).name
        if name not in named:
            raise ValueError(f"the prompt {prompt!r} does not mention {name!r}; it mentions {sorted(named)}")
    for new in replace.values():
        category(new)  # raises for unknown classes
    out = prompt
    for m in sorted(mentions, key=lambda m: -m.start):  # right to left keeps earlier spans valid
        if m.category in {category(c).name for c in replace}:
            new = category(next(v for k, v in replace.items() if category(k).name == m.category)).name
            out = out[: m.start] + new + out[m.end :]
        elif m.category in {category(c).name for c in remove}:
            head = re.sub(r"(\b(a|an|the|one|two|three|four|five|some)\s+)$", "", out[: m.start], flags=re.I)
            out = head + out[m.end :]
    out = re.sub(r"\s+(and|,)\s*(?=(,|\.|$|\s+(and|on|in|under|near|next)\b))", "", out)
    out = re.sub(r"^\s*(and|,)\s+|\s+(and|,)\s*$", "", re.sub(r"\s{2,}", " ", out)).strip()
    if not parse_prompt(out).things and parse_prompt(prompt).things:
        raise ValueError(f"removing {remove} from {prompt!r} leaves no object in the prompt")
    return out


@dataclass
class RealEdit:
    source_map: np.ndarray  # the judge's map of the real image
    edited_map: np.ndarray
    image: Image.Image  # the re-rendered image
    prompt: str
    edited_prompt: str
    timings: dict[str, float] = field(default_factory=dict)


def semantic_map_edit(pipe: FactorGraphPipeline, labels: np.ndarray, prompt: str, edited_prompt: str, *,
                      steps: int | None = None, guidance: float = 3.0) -> np.ndarray:  # fmt: skip
    """Invert a map through the seg factor with ``prompt``; regenerate it with ``edited_prompt``."""
    size = labels.shape[0]
    x_t = pipe.invert("seg", labels, prompt, size=size, steps=steps)
    out = pipe(edited_prompt, factors=["seg"], init_latents={"seg": x_t}, sizes={"seg": size},
               steps={"seg": steps} if steps else None, guidance={"seg": guidance})  # fmt: skip
    return out.labels[0]


def render_edit(pipe: FactorGraphPipeline, image: Image.Image, source: np.ndarray, edited: np.ndarray, prompt: str,
                *, pixel: bool = True, steps: int | None = None, seed: int = 0,
                guidance: float | None = None) -> Image.Image:  # fmt: skip
    """Re-render an edited map with the image factor; with ``pixel``, from the image's own
    inverted noise (inverted with its source map), so unchanged regions are kept."""
    size = source.shape[0]
    init = None
    if pixel:
        init = {"image": pipe.invert("image", image, prompt, given={"seg": source}, size=size, steps=steps)}
    out = pipe(prompt, factors=["image"], given={"seg": edited}, sizes={"image": size}, seed=seed,
               steps={"image": steps} if steps else None,
               guidance={"image": guidance if guidance is not None else (1.0 if pixel else pipe.spec.factors["image"].guidance)},
               init_latents=init)  # fmt: skip
    return out.images[0]


def edit_real_image(pipe: FactorGraphPipeline, judge: Judge, image: Image.Image, prompt: str, *,
                    replace: dict[str, str] | None = None, remove: list[str] | None = None, map_edits=None,
                    pixel: bool = True, steps: int | None = None, seed: int = 0) -> RealEdit:  # fmt: skip
    """Extract, edit (by text and/or ``map_edits(MapSample) -> MapSample``), re-render."""
    from .maps import MapSample

    if "seg" not in pipe.spec.factors or "image" not in pipe.spec.factors:
        raise ValueError(f"real-image editing needs seg and image factors; the graph has {list(pipe.spec.factors)}")
    if "seg" not in pipe.spec.factors["image"].parents:
        raise ValueError("the graph's image factor is not conditioned on seg")
    if not (replace or remove or map_edits):
        raise ValueError("nothing to edit: give replace, remove or map edits")
    t0 = time.perf_counter()
    size = pipe.spec.factors["image"].size or pipe.native_size()
    source = extract_map(judge, image, size)
    edited_prompt = edit_prompt(prompt, replace, remove) if (replace or remove) else prompt
    edited = source
    t1 = time.perf_counter()
    if replace or remove:
        edited = semantic_map_edit(pipe, source, prompt, edited_prompt, steps=steps)
    if map_edits is not None:
        edited = map_edits(MapSample.from_labels(edited)).seg
    t2 = time.perf_counter()
    img = render_edit(pipe, image, source, edited, edited_prompt, pixel=pixel, steps=steps, seed=seed)
    t3 = time.perf_counter()
    return RealEdit(source, edited, img, prompt, edited_prompt,
                    {"extract_s": t1 - t0, "map_edit_s": t2 - t1, "render_s": t3 - t2, "total_s": t3 - t0})  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of two uint8 images, over ``mask`` if given (inf for identical pixels)."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        if not mask.any():
            return float("nan")
        d = d[mask]
    mse = d.mean()
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def edit_metrics(pipe: FactorGraphPipeline, judge: Judge, image: Image.Image, prompt: str, result: RealEdit, *,
                 steps: int | None = None) -> dict:  # fmt: skip
    """Inversion reconstruction PSNR (no edit), unchanged-region PSNR, and the judge's recall of
    each class new to the edited region (the fraction of those pixels it labels as that class)."""
    size = result.source_map.shape[0]
    orig = resize_image(np.asarray(image.convert("RGB")), size)
    recon = render_edit(pipe, image, result.source_map, result.source_map, prompt, pixel=True, steps=steps)
    changed = result.source_map != result.edited_map
    new = np.asarray(result.image.convert("RGB"))
    judged = extract_map(judge, result.image, size)
    recall = {}
    for cid in np.unique(result.edited_map[changed]).tolist():
        region = changed & (result.edited_map == cid)
        if category(int(cid)).is_thing:
            recall[category(int(cid)).name] = round(float((judged[region] == cid).mean()), 4)
    return {"reconstruction_psnr": round(psnr(np.asarray(recon.convert("RGB")), orig), 3),
            "unchanged_psnr": round(psnr(new, orig, ~changed[..., None].repeat(3, 2)), 3),
            "edited_fraction": round(float(changed.mean()), 4), "edited_region_recall": recall}  # fmt: skip


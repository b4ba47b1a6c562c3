"""The weights that ship in the package (`src/fgdm/models/data/`): each loads offline and does its
job. A folder that has not shipped yet is skipped with that reason — these run as soon as it lands."""

import numpy as np
import pytest
import torch

from fgdm.models.factors import default_graph_dir
from fgdm.models.judge import default_judge_dir
from fgdm.models.miniclip import default_clip_dir
from fgdm.models.pipeline import default_model_dir


def _need(path, what):
    if not path.exists():
        pytest.skip(f"{what} has not shipped yet ({path})")


def test_shipped_minisd_loads_offline_and_generates():
    _need(default_model_dir(), "MiniSD")
    from diffusers import StableDiffusionPipeline

    from fgdm.pipelines import Text2ImagePipeline

    StableDiffusionPipeline.from_pretrained(default_model_dir(), local_files_only=True)  # stock diffusers
    res = Text2ImagePipeline.from_pretrained()("a photo of a dog on the grass", num_inference_steps=10, seed=0)
    img = np.asarray(res.images[0])
    assert img.shape == (128, 128, 3) and img.std() > 5  # an image, not a flat field


def test_shipped_judge_sees_fresh_renders():
    _need(default_judge_dir(), "the judge")
    from fgdm.models.judge import load_judge
    from fgdm.training.judge import evaluate_judge

    # seeds no run has used; 200 renders (~30 s reading three sizes), not 40: the shipped judge read at
    # one size (F1 0.940-0.952 on 500-2,000 renders of other seeds) scored 0.896 on the first 40 of
    # these and 0.923 on all 200 (mIoU 0.79); reading three sizes, as it ships, 0.938 (mIoU 0.81)
    m = evaluate_judge(load_judge(), n=200, seed=987_654, progress=False)
    assert m["presence_f1"] >= 0.9 and m["miou"] >= 0.7, m


def test_shipped_miniclip_pairs_with_minisd():
    _need(default_clip_dir(), "the evaluation MiniCLIP")
    _need(default_model_dir(), "MiniSD")
    from fgdm.eval.quality import MiniCLIPFeatures
    from fgdm.world.dataset import make_sample
    from fgdm.world.scene import WorldConfig

    clip = MiniCLIPFeatures()
    wc = WorldConfig(min_objects=1, max_objects=1)
    samples = [make_sample(i, seed=123_456, size=128, config=wc) for i in range(8)]
    x = torch.stack([torch.from_numpy(s.render.image).permute(2, 0, 1) for s in samples]).float() / 255
    img = torch.nn.functional.normalize(clip.images(x), dim=-1)
    names = [s.render.scene.objects[0].category for s in samples]
    txt = torch.nn.functional.normalize(clip.texts([f"a photo of a {n}" for n in names]), dim=-1)
    sim = img @ txt.T
    assert (sim.diagonal() > sim.mean()).float().mean() >= 0.75  # matched captions score above the rest


def test_shipped_graph_generates_on_minisd():
    _need(default_graph_dir(), "the FG-DM graph")
    from fgdm.pipelines.factor_graph import FactorGraphPipeline

    pipe = FactorGraphPipeline.from_pretrained()
    assert {"seg", "image"} <= set(pipe.spec.factors)
    out = pipe("a photo of a dog and a cat on the grass", factors=["seg", "image"], steps={"seg": 10, "image": 10})
    assert out.images[0].size == (128, 128) and out.labels[0].shape[0] in (64, 128)


def test_shipped_image_factor_follows_a_given_map():
    """The shipped image factor's job: an image laid out as the seg map it is given. The judge's
    segmentation of its images must agree with held-out real maps on more pixels than the base
    model's images of the same captions and seeds, which never see the map (measured on 24 renders,
    25 steps: docs/results.md, "A CPU-trained graph ships")."""
    _need(default_graph_dir(), "the FG-DM graph")
    from fgdm.eval.fgdm_quality import consistency
    from fgdm.models.judge import load_judge
    from fgdm.pipelines.factor_graph import FactorGraphPipeline
    from fgdm.pipelines.text2image import Text2ImagePipeline
    from fgdm.world.conditions import encode_segmentation
    from fgdm.world.dataset import make_sample

    graph, judge = FactorGraphPipeline.from_pretrained(), load_judge()
    base = Text2ImagePipeline(graph.base)
    samples = [make_sample(i, seed=654_321, size=128) for i in range(6)]  # a seed no run has used
    captions = [s.caption.text for s in samples]
    maps = [encode_segmentation(s.render.seg) for s in samples]
    seeds = list(range(len(samples)))
    given = graph(captions, factors=["image"], given={"seg": maps}, seed=seeds, steps={"image": 15})
    plain = base(captions, seed=seeds, num_inference_steps=15)
    agree = {name: consistency(judge, [np.asarray(im.convert("RGB")) for im in out.images], maps, None)
             for name, out in (("factor", given), ("base", plain))}  # fmt: skip
    f, b = agree["factor"]["consistency_pixel_acc"], agree["base"]["consistency_pixel_acc"]
    assert f > b + 0.05, agree


def test_weights_in_the_tree_fit_the_budget():
    """Every weight file the repository carries (shipped folders and committed checkpoints, the
    base's tar parts included) together stays within 40 MiB, so the tree still travels to the GPU."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [p for d in (root / "src" / "fgdm" / "models" / "data", root / "checkpoints") if d.exists()
             for p in d.rglob("*") if p.is_file() and (p.suffix == ".safetensors" or ".tar.part-" in p.name)]  # fmt: skip
    total = sum(p.stat().st_size for p in files)
    assert total <= 40 * 2**20, f"{total / 2**20:.1f} MiB of weights: {sorted(str(p.relative_to(root)) for p in files)}"


def test_shipped_seg_factor_names_its_captions_objects():
    """The shipped seg factor (from scratch, 64 px; docs/results.md, "A from-scratch seg factor") draws
    maps that name their caption's objects well above chance: the same maps scored against another
    caption's objects (48 captions, 25 steps: 0.358 vs 0.134; these 16 at 15 steps: 0.304 vs 0.117).
    The adapter it replaced scored below chance at 64 px (0.112 vs 0.172)."""
    _need(default_graph_dir(), "the FG-DM graph")
    from fgdm.eval.fgdm_quality import object_counts
    from fgdm.pipelines.factor_graph import FactorGraphPipeline
    from fgdm.world.dataset import make_sample
    from fgdm.world.vocab import parse_prompt

    graph = FactorGraphPipeline.from_pretrained()
    captions = [make_sample(i, seed=765_432, size=64).caption.text for i in range(16)]  # a seed no run has used
    out = graph(captions, factors=["seg"], seed=list(range(16)), steps={"seg": 15})
    objects = [parse_prompt(c).things for c in captions]
    own = object_counts(out.labels, objects, "s")["s_object_recall"]
    other = object_counts(out.labels, objects[1:] + objects[:1], "s")["s_object_recall"]
    assert own > other + 0.1, (own, other)


def test_shipped_depth_factor_beats_a_mean_depth_map():
    """The shipped depth factor (from scratch, 64 px, eta 1; docs/results.md, "The depth factor
    trained longer") given held-out renders' real seg maps draws depth closer to their real depth
    than the other renders' mean depth map is (results.md, 32 renders at 25 steps: MAE 0.028 against
    0.073; here 8 fresh renders at 15 steps, within 0.7 of the mean map's error)."""
    _need(default_graph_dir(), "the FG-DM graph")
    from fgdm.pipelines.factor_graph import FactorGraphPipeline
    from fgdm.world.conditions import decode_depth, encode_segmentation
    from fgdm.world.dataset import make_sample

    graph = FactorGraphPipeline.from_pretrained()
    if "depth" not in graph.spec.factors:
        pytest.skip("the shipped graph has no depth factor")
    samples = [make_sample(i, seed=876_543, size=64) for i in range(8)]  # a seed no run has used
    maps = [encode_segmentation(s.render.seg) for s in samples]
    real = np.stack([decode_depth(s.render.conditions()["depth"]) for s in samples])
    out = graph([s.caption.text for s in samples], factors=["depth"], given={"seg": maps}, seed=list(range(8)),
                steps={"depth": 15})  # fmt: skip
    got = np.stack([decode_depth(m) for m in out.maps["depth"]])
    mean_map = (real.sum(0)[None] - real) / (len(real) - 1)  # each render's, from the other seven
    mae, baseline = float(np.abs(got - real).mean()), float(np.abs(mean_map - real).mean())
    assert mae < 0.7 * baseline, (mae, baseline)

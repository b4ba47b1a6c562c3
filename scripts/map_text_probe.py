"""Training-free text levers on SBPC's map ceiling: does steering the image factor's text attention
by the map, or handing the text to it in shorter captions, draw more of a dense prompt's objects?

For each of the first prompts of a dense prompt file: the world render showing exactly its objects
(the render and seed of ``fgdm eval sbpc``'s ceiling rows, seed 1000 x the prompt's index), its seg
map at 64 px given to the graph's image factor with the prompt, as the ``FG-DM on real maps (map
ceiling)`` row does; one image per arm, all with the same seed; the judge's recall of the prompt's
objects in each. Arms (on the base UNet the image factor drives; ``bias`` and ``regions`` are
``fgdm.attention.regions``):

- ``none``: the image factor as it ships (the map-ceiling row);
- ``bias:S``: :func:`region_bias` — the logits of the prompt's class words raised by S inside their
  class's region, lowered by S outside it;
- ``regions:W``: :func:`regional_prompts` — over each named object's region the whole prompt's
  cross-attention is blended with that of "a photo of a <object>" (weight W x the class's share of
  the cell), the single-object prompts MiniSD draws at 93%;
- ``chunks:K``: the prompt encoded as K shorter captions of the same template, each naming about
  1/K of its objects ("a scene with a banana and a bird." + "a scene with a bus and a cup."), their
  text states concatenated along the tokens (the unconditional row as K empty captions), so that no
  object's tokens sit at positions later than the training captions reach (A1111-style prompt
  chunking, each chunk re-templated);
- ``bands:K``: the image in K vertical bands, each denoised with a caption of its own naming the
  objects whose real-map region lies mostly in it (the template with no object, "a scene.", where
  none does); the UNet's K predictions are blended across the bands at every step (noise-level
  regional prompts, as MultiDiffusion blends windows), so that each caption names only its band's
  objects;
- ``masks:W``: a caption per object over its own region of the real map ("a scene with a dog."
  where the map shows the dog), the whole prompt elsewhere: the UNet predicts once per caption and
  the predictions are blended per latent cell by the map's class shares (regional prompting at the
  noise level, MultiDiffusion's region-based form), the whole prompt keeping weight W inside the
  objects' regions too (W = 0: each region sees its own object's caption alone);
- ``split:W``: :func:`fgdm.pipelines.split.split_render` — as ``masks:W``, and each object's pass is
  also given a map of that object alone (the other objects' pixels painted with the map's commonest
  stuff class), so that every pass is a one-object scene, where this image factor draws the object
  as itself in its region 86% of the time; the passes run as one batch of the graph (one row per
  caption and map, all with the same seed) whose rows' predictions are blended at every step, so
  they share one trajectory;
- ``split-early:F``: ``split:0`` with only the first share F of the steps (0 < F <= 1) drawn one
  object at a time, the rest by the whole prompt on the whole map alone (``split_render``'s
  ``split_steps``), so the objects' passes cost only that share; ``split-late:F``: the last share F;
- ``base`` and ``base-chunks:K`` / ``base-bands:K``: the base model alone, no map (``fgdm eval
  sbpc``'s ``base N=1`` image), with the prompt as it is, chunked, or in bands (the objects in the
  prompt's order, about 1/K of them per band, left to right); compared with ``base``.

Writes OUT/results.json (per prompt: its objects, and each arm's recall, the seconds it took, the
objects the judge found and what the judge gives most of each object's region in the real map, one of
:data:`fgdm.compliance.recall.VERDICTS`; rewritten after every prompt, so a run resumes),
OUT/summary.json (each arm's mean recall, its sign test against ``none`` (the ``base-`` arms: against
``base``), the share of objects found by their place in the prompt: first named, second, ..., and the
share of objects' regions given each verdict, overall and (its own class) by the object's area in the
real map, and its mean seconds per prompt over the prompts every arm was timed on: the first 4 are
drawn again by every run, for the sheet), OUT/recall.png (each arm's mean recall, with its
standard error over the prompts) and OUT/sheet.png (the first 4 prompts, every arm).

    python scripts/map_text_probe.py --prompts prompts/dense_6to8_200.json --start 0 --n-prompts 30 \\
        --arms none,bias:5,bias:10,regions:0.5,regions:1 --out runs/map-text-a
    python scripts/map_text_probe.py --prompts prompts/dense_6to8_200.json --n-prompts 60 \\
        --arms none,chunks:2,base,base-chunks:2,base-chunks:3 --out runs/map-text-60-chunks
    python scripts/map_text_probe.py --prompts prompts/dense_6to8_200.json --n-prompts 60 \\
        --arms none,bands:2,bands:3,base,base-bands:2 --out runs/map-text-60-bands
    python scripts/map_text_probe.py --prompts prompts/dense_6to8_200.json --n-prompts 60 \\
        --arms none,masks:0,masks:0.3 --out runs/map-text-60-masks
    python scripts/map_text_probe.py --prompts prompts/dense_6to8_200.json --n-prompts 60 \\
        --arms none,split:0,split:0.3 --out runs/map-text-60-split
    python scripts/map_text_probe.py --prompts prompts/dense_6to8_200.json --n-prompts 60 \\
        --arms none,split:0,split-early:0.2,split-early:0.4 --out runs/map-text-60-split-early
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fgdm.attention import LayerSelector, attention_control
from fgdm.attention.regions import region_bias, regional_prompts
from fgdm.compliance.recall import VERDICTS, object_recall, present_categories, region_verdict
from fgdm.eval.metrics import sign_test
from fgdm.eval.plots import bar_chart
from fgdm.eval.sbpc_bench import prompt_render
from fgdm.models.factors import class_fractions
from fgdm.models.judge import load_judge
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.pipelines.split import object_masks, split_render, template_caption
from fgdm.pipelines.text2image import Text2ImagePipeline
from fgdm.world.categories import category
from fgdm.world.conditions import resize_labels
from fgdm.world.prompts import read_prompts
from fgdm.world.sheet import contact_sheet
from fgdm.world.vocab import parse_prompt

REGION_PROMPT = "a photo of a {}"  # the single-object template of prompts/single_400.json
KINDS_K = ("chunks", "bands", "base-chunks", "base-bands")  # arms whose value is a whole K >= 2
SPLIT_KINDS = ("split", "split-early", "split-late")  # split_render: W; the share of the steps split, first or last
EMPTY_BAND = "a scene."  # a band's caption where no object is assigned to it
AREA_EDGES = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 1.0)  # bands of an object's share of the image, for the summary


def parse_arms(text: str) -> list[tuple[str, float]]:
    """``none,bias:5,regions:0.5,chunks:2,base`` -> one (kind, value) per arm (none, base: value 0)."""
    arms = []
    for item in text.split(","):
        kind, _, value = item.strip().partition(":")
        if kind in ("none", "base") and not value:
            arms.append((kind, 0.0))
            continue
        try:
            v = float(value)
        except ValueError:
            v = None
        if (kind not in ("bias", "regions", "masks", *SPLIT_KINDS, *KINDS_K) or v is None or v < 0
                or (kind in ("regions", "masks", *SPLIT_KINDS) and v > 1) or (kind in SPLIT_KINDS[1:] and v == 0)
                or (kind in KINDS_K and (v < 2 or v != int(v)))):  # fmt: skip
            raise SystemExit(f"--arms: {item!r} is not none, base, bias:S (S >= 0), regions:W, masks:W or "
                             "split:W (0 <= W <= 1), split-early:F, split-late:F (0 < F <= 1), chunks:K, bands:K, base-chunks:K or "
                             "base-bands:K (K >= 2, whole)")  # fmt: skip
        arms.append((kind, v))
    return arms


def group_caption(prompt: str, group: list[str]) -> str:
    """:func:`~fgdm.pipelines.split.template_caption` of ``group``; :data:`EMPTY_BAND` for none."""
    return template_caption(prompt, group) if group else EMPTY_BAND


def chunk_captions(prompt: str, objects: list[str], k: int) -> list[str]:
    """``prompt``'s objects in (at most) ``k`` captions of its template, about 1/k of them each, in order."""
    return [group_caption(prompt, list(g)) for g in np.array_split(np.array(objects, dtype=object), k) if len(g)]


def band_masks(k: int, width: int, ramp: int = 2) -> torch.Tensor:
    """(k, width) weights of ``k`` vertical bands over ``width`` latent columns, summing to 1 in every
    column: 1 inside a band, a linear ramp of ``ramp`` columns either side of each border."""
    x = torch.arange(width, dtype=torch.float32) + 0.5
    edges = [width * j / k for j in range(1, k)]
    # the share of band j at x: between its left and right border, each softened over 2 * ramp columns
    step = lambda e: ((x - e) / (2 * ramp) + 0.5).clamp(0, 1)  # 0 left of border e, 1 right of it
    right_of = [torch.ones(width), *[step(e) for e in edges], torch.zeros(width)]
    return torch.stack([right_of[j] - right_of[j + 1] for j in range(k)])


def band_groups(objects: list[str], k: int, seg: np.ndarray | None) -> list[list[str]]:
    """Which objects each of ``k`` bands names: by ``seg`` (class ids), the band holding most of each
    object's class pixels; without a map, about 1/k of them per band in the prompt's order."""
    if seg is None:
        return [list(g) for g in np.array_split(np.array(objects, dtype=object), k)]
    cols = np.arange(seg.shape[1]) * k // seg.shape[1]
    groups: list[list[str]] = [[] for _ in range(k)]
    for o in objects:
        mass = [(seg[:, cols == j] == category(o).id).sum() for j in range(k)]
        groups[int(np.argmax(mass))].append(o)
    return groups


@contextlib.contextmanager
def banded_unet(unet, masks: torch.Tensor, tokens: int):
    """Within the block ``unet`` reads text states of ``k * tokens`` tokens (:func:`chunked_text` of
    k captions) as k captions: it predicts once per caption and blends the k predictions with
    ``masks``: (k, W) over the latent's columns (bands) or (k, H, W) over its cells (regions)."""
    plain = unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        k = encoder_hidden_states.shape[1] // tokens
        outs = [plain(sample, timestep, encoder_hidden_states[:, j * tokens : (j + 1) * tokens], *args, **kwargs)
                for j in range(k)]  # fmt: skip
        preds = [o.sample if hasattr(o, "sample") else o[0] for o in outs]
        if masks.shape not in ((k, sample.shape[-1]), (k, *sample.shape[-2:])):
            raise ValueError(f"banded_unet: masks of shape {tuple(masks.shape)} for {k} captions and a latent "
                             f"{sample.shape[-1]} wide")  # fmt: skip
        w = masks.to(sample)
        mixed = sum(p * w[j] for j, p in enumerate(preds))  # each caption's weights over the last axes (columns or cells)
        return type(outs[0])(sample=mixed) if hasattr(outs[0], "sample") else (mixed,)

    unet.forward = forward
    try:
        yield
    finally:
        del unet.forward


@contextlib.contextmanager
def chunked_text(model, chunks: dict[str, list[str]]):
    """Within the block ``model.encode_text`` gives each prompt of ``chunks`` its chunks' text states,
    concatenated along the tokens, and "" (the unconditional prompt) as many empty captions' states."""
    plain = model.encode_text
    k = len(next(iter(chunks.values())))

    def encode(prompts, *, allow_empty=False):
        if any(p and p not in chunks for p in prompts):
            raise ValueError(f"chunked_text: no chunks for {[p for p in prompts if p and p not in chunks]}")
        rows = [plain(chunks.get(p, [""] * k), allow_empty=True) for p in prompts]
        return torch.cat([e.reshape(1, -1, e.shape[-1]) for e, _ in rows]), [list(itertools.chain(*t)) for _, t in rows]

    model.encode_text = encode
    try:
        yield
    finally:
        del model.encode_text  # the class's method again


def render_arm(graph: FactorGraphPipeline, arm: tuple[str, float], prompt: str, objects: list[str], seg: np.ndarray,
               seed: int) -> Image.Image:  # fmt: skip
    """The image factor's image for ``prompt`` given ``seg`` (class ids), under one arm."""
    base, (kind, value) = graph.base, arm
    if kind.startswith("base"):  # fgdm eval sbpc's base N=1 image: the same seed, steps and guidance
        draw = lambda: Text2ImagePipeline(base)(prompt, seed=[seed], num_inference_steps=25).images[0]
    else:
        draw = lambda: graph(prompt, factors=["image"], given={"seg": seg}, seed=seed).images[0]
    if kind in ("base", "none"):
        return draw()
    if kind.endswith("chunks"):
        with chunked_text(base, {prompt: chunk_captions(prompt, objects, int(value))}):
            return draw()
    lat = graph.native_size() // base.vae_scale_factor
    if kind.endswith("bands"):
        k = int(value)
        captions = [group_caption(prompt, g) for g in band_groups(objects, k, None if kind == "base-bands" else seg)]
        with (chunked_text(base, {prompt: captions}),
              banded_unet(base.unet, band_masks(k, lat), base.tokenizer.model_max_length)):  # fmt: skip
            return draw()
    if kind == "split":
        return split_render(graph, prompt, seg, seed=seed, whole=value, objects=objects).images[0]
    if kind in SPLIT_KINDS[1:]:
        share = value if kind == "split-early" else (1 - value, 1.0)
        return split_render(graph, prompt, seg, seed=seed, objects=objects, split_steps=share).images[0]
    if kind == "masks":
        shown, masks = object_masks(objects, seg, lat, value)
        captions = [prompt, *(group_caption(prompt, [o]) for o in shown)]
        with (chunked_text(base, {prompt: captions}),
              banded_unet(base.unet, masks, base.tokenizer.model_max_length)):  # fmt: skip
            return draw()
    shares = class_fractions(torch.from_numpy(seg.copy())[None], (lat, lat))
    if kind == "bias":
        modulate = region_bias(shares, base.class_tokens([prompt]), value)
        with attention_control(base.unet, LayerSelector(kinds=("cross",)), modulate=modulate):
            return draw()
    ids = [category(o).id for o in objects]
    contexts = base.encode_text([REGION_PROMPT.format(category(o).singular) for o in objects])[0][None]
    with regional_prompts(base.unet, contexts, value * shares[:, ids]):
        return draw()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--start", type=int, default=0, help="index of the first prompt")
    ap.add_argument("--n-prompts", type=int, default=30)
    ap.add_argument("--arms", default="none,bias:5,regions:0.5",
                    help="comma-separated, none first: bias:S, regions:W, masks:W, split:W, split-early:F, split-late:F, chunks:K, bands:K, base, base-chunks:K, "
                         "base-bands:K (each described above)")  # fmt: skip
    ap.add_argument("--graph", default=None, help="FG-DM graph folder (default: the shipped graph)")
    ap.add_argument("--judge", default=None, help="judge folder (default: the shipped judge)")
    ap.add_argument("--cond-size", type=int, default=64, help="side of the real maps given (fgdm eval sbpc's)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    arms = parse_arms(args.arms)
    if arms[0] != ("none", 0.0):
        raise SystemExit("--arms: the first arm must be none (the others are compared with it)")
    if any(k.startswith("base-") for k, _ in arms) and ("base", 0.0) not in arms:
        raise SystemExit("--arms: base-chunks:K and base-bands:K are compared with base; add the arm base")
    names = [k if k in ("none", "base") else f"{k}:{v:g}" for k, v in arms]
    try:  # bad input is the user's: an argument error, not a traceback
        prompts = read_prompts(args.prompts, "--prompts")[args.start : args.start + args.n_prompts]
        graph, judge = FactorGraphPipeline.from_pretrained(args.graph), load_judge(args.judge)
    except ValueError as e:
        ap.error(str(e))
    if args.start < 0 or args.n_prompts < 1 or not prompts:
        raise SystemExit(f"--start {args.start} --n-prompts {args.n_prompts}: no prompts of {args.prompts} in that range")
    if not {"seg", "image"} <= set(graph.spec.factors):
        raise SystemExit(f"--graph: the probe needs seg and image factors; this graph has {list(graph.spec.factors)}")
    if graph.spec.factors["image"].kind == "scratch" and any(k in ("bias", "regions", "masks", "bands") for k, _ in arms):
        raise SystemExit("--arms: this graph's image factor is a whole UNet of its own (kind scratch); the arms "
                         "steer the base UNet, which an adapter or ControlNet image factor drives")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_file = out / "results.json"
    results = json.loads(res_file.read_text()) if res_file.exists() else {}
    tiles = []
    for i, prompt in enumerate(tqdm(prompts, desc="map-text probe")):
        p = args.start + i
        objects = list(parse_prompt(prompt).things)
        if not objects:  # recall, the chunks and the bands all need the prompt's objects
            raise SystemExit(f"--prompts: prompt {p} ({prompt!r}) names no known object; the probe scores object recall")
        row = results.get(str(p), {"prompt": prompt, "objects": objects, "recall": {}})
        row.setdefault("found", {})
        row.setdefault("region", {})
        row.setdefault("seconds", {})
        render = prompt_render(prompt, objects, 1000 * p, graph.native_size())
        seg = resize_labels(render.seg, args.cond_size)
        row["areas"] = [round(float((render.seg == category(o).id).mean()), 5) for o in objects]  # of the image
        images = []
        for arm, name in zip(arms, names, strict=True):
            if name in row["region"] and i >= 4:
                continue
            t0 = time.perf_counter()
            image = render_arm(graph, arm, prompt, objects, seg, 1000 * p)
            row["seconds"][name] = round(time.perf_counter() - t0, 3)
            labels = judge.segment_images([image])[0]
            present = present_categories(labels)
            row["recall"][name] = object_recall(objects, present)
            row["found"][name] = [o for o in objects if o in present]
            labels = resize_labels(labels, render.seg.shape[0])
            row["region"][name] = [region_verdict(labels[render.seg == category(o).id], o, objects) for o in objects]
            images.append(np.asarray(image))
        if i < 4:
            tiles.append(images)
        results[str(p)] = row
        res_file.write_text(json.dumps(results, indent=1))
    rows = [results[str(args.start + i)] for i in range(len(prompts))]
    against = lambda n: "base" if n.startswith("base-") else "none"  # what each arm is compared with
    places = max(len(r["objects"]) for r in rows)
    by_place = lambda n: [round(float(np.mean([r["objects"][k] in r["found"][n] for r in rows if len(r["objects"]) > k])), 3)
                          for k in range(places)]  # fmt: skip
    def by_area(n: str) -> dict[str, list]:  # per band of the object's area: [objects, share whose region holds its class]
        cells = [(a, x == VERDICTS[0]) for r in rows for a, x in zip(r["areas"], r["region"][n], strict=True)]
        bands = {f"{100 * lo:g}-{100 * hi:g}%": [own for a, own in cells if lo <= a < hi or (hi == 1 and a == 1)]
                 for lo, hi in itertools.pairwise(AREA_EDGES)}  # fmt: skip
        return {b: [len(v), round(float(np.mean(v)), 3)] for b, v in bands.items() if v}

    timed = [r for r in rows if all(n in r.get("seconds", {}) for n in names)]
    summary = {"prompts": len(rows), "start": args.start, "prompts_timed": len(timed), "arms": {
        n: {"mean_recall": round(float(np.mean([r["recall"][n] for r in rows])), 4),
            **({} if n in ("none", "base") else {f"vs_{against(n)}": sign_test([r["recall"][against(n)] for r in rows],
                                                                              [r["recall"][n] for r in rows])}),
            "found_by_place": by_place(n),
            "region": {v: round(float(np.mean([x == v for r in rows for x in r["region"][n]])), 3) for v in VERDICTS},
            "own_class_by_area": by_area(n),
            "seconds_per_prompt": round(float(np.mean([r["seconds"][n] for r in timed])), 3) if timed else None}
        for n in names}, "objects_by_place": [sum(len(r["objects"]) > k for r in rows) for k in range(places)]}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    recalls = [[r["recall"][n] for r in rows] for n in names]
    bar_chart(names, [float(np.mean(v)) for v in recalls], errors=[float(np.std(v) / np.sqrt(len(v))) for v in recalls],
              title=f"final image recall, {len(rows)} prompts (± s.e.)", ymax=1.0,
              size=(max(520, 130 * len(names)), 320)).save(out / "recall.png")  # fmt: skip
    if tiles:
        notes = [[[(f"recall {rows[i]['recall'][n]:.2f}", (0, 0, 0))] for n in names] for i in range(len(tiles))]
        contact_sheet(tiles, headers=names, captions=[rows[i]["prompt"] for i in range(len(tiles))],
                      tile_notes=notes).save(out / "sheet.png")  # fmt: skip
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

"""``fgdm eval fgdm``: the quality of FG-DM's conditions and images — the analogue of the paper's
Table 5 (per condition type, vs the base model alone), Table 2 (with vs without attention
distillation) and of joint vs ancestral sampling, every configuration in one run.

Configurations (rows), each on the same prompts and seeds:

- ``base``: the base model alone;
- ``FG-DM <factors> <mode>``: the graph sampling those factors (e.g. ``seg,image``), ``joint``
  (every factor steps at every step on its parents' current estimates) or ``ancestral`` (each
  factor finishes before its children start); parents not sampled are the null condition;
- ``FG-DM <factors> joint <label>``: the same with an ablation graph's own factors swapped in
  (e.g. ``no-distill``: the seg factor trained without attention distillation; ``adapter-image``:
  an adapter image factor in place of the ControlNet), for the sets that use them.

Per row: the images' Fréchet distance, precision and recall against real renders and their CLIP
score with the prompt (all in MiniCLIP's feature space); the same distance / precision / recall
for every sampled condition map against real condition maps (each against renders of its own size,
``reference_px``: a 64-px seg map beside a 128-px image is compared with 64-px renders); consistency, when a judge is given —
the mIoU between the judge's segmentation of the image and the sampled segmentation map (the image
factor must follow its map) and the share of pixels where the two agree, and the mean absolute
error between the judge's depth and the sampled depth map; the sampled seg maps' palette fit (the
share of their pixels within the decoder's tolerance of a palette colour, ``seg_palette_fit``:
how much of each map was read rather than guessed); object recall — the share of the prompt's
objects present (presence: a class covers >= 0.3% of the map) in every sampled seg map
(``seg_object_recall``, what SBPC ranks maps by) and, with a judge, in the judge's segmentation of
every image (``image_object_recall``, for the base row too) — with the thing categories present per map or image (``*_things_per_map``), and for an
ablation row its maps' and images' recall against the main row's, pair by pair (same prompt and
seed: ``*_object_recall_vs_main``, the counts better / worse and the sign-test p); and seconds
per image. Samples are cached per (prompt, configuration) as PNG files, so
an interrupted run resumes and the metrics can be recomputed from the folder.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..compliance.recall import object_recall, present_categories
from ..models.judge import Judge
from ..pipelines.factor_graph import FactorGraphPipeline
from ..pipelines.text2image import Text2ImagePipeline
from ..world.categories import NUM_CLASSES, VOID_ID
from ..world.conditions import (
    decode_depth,
    decode_normals,
    decode_segmentation,
    decode_sketch,
    normals_from_depth,
    resize_labels,
)
from ..world.render import sketch_from
from ..world.sheet import contact_sheet
from ..world.vocab import parse_prompt
from .features import clip_score, frechet_distance, precision_recall
from .metrics import map_agreement, normal_agreement, sign_test
from .runner import real_reference
from .timing import sync

K_NEIGHBOURS = 3  # precision/recall's k


def default_sets(graph: FactorGraphPipeline) -> list[list[str]]:
    """One factor set per condition: ``[c, "image"]`` where the image factor takes ``c`` as a parent,
    else ``[c]`` alone (its maps are measured, no image); then the whole graph, if it has more than
    one condition."""
    nodes = graph.spec.factors
    image_parents = set(nodes["image"].parents) if "image" in nodes else set()
    sets = [[c, "image"] if c in image_parents else [c] for c in nodes if c != "image"]
    return sets + [list(nodes)] if len(sets) > 1 else sets


def configurations(sets: list[list[str]], modes: list[str],
                   ablations: list[tuple[str, list[str]]] = ()) -> list[dict]:  # fmt: skip
    """The rows of the table, in order. Modes only differ for sets of two or more factors;
    ``ablations`` are (label, swapped factors) pairs, each giving a joint row for every set that
    uses one of its factors."""
    rows = [{"config": "base", "kind": "base"}]
    for s in sets:
        for mode in modes if len(s) > 1 else modes[:1]:
            rows.append({"config": f"FG-DM {','.join(s)} {mode}", "kind": "fgdm", "factors": s, "mode": mode})
        for label, names in ablations:
            if set(names) & set(s):
                rows.append({"config": f"FG-DM {','.join(s)} {modes[0]} {label}", "kind": "fgdm", "factors": s,
                             "mode": modes[0], "ablation": label})  # fmt: skip
    return rows


def _slug(config: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", config).strip("_")


def _sample(cfg: dict, prompt: str, p: int, k: int, seed: int, steps: int, *, graph, ablated: dict, base) -> tuple:
    """(images, {condition: maps}, seconds, the sampled seg maps' palette fits or None) of one
    configuration on one prompt."""
    s = seed + 1000 * p
    sync()
    t0 = time.perf_counter()
    if cfg["kind"] == "base":
        res = base(prompt, num_images_per_prompt=k, num_inference_steps=steps, seed=s)
        images, maps, fits = res.images, {}, None
    else:
        pipe = ablated[cfg["ablation"]] if cfg.get("ablation") else graph
        res = pipe(prompt, factors=cfg["factors"], num_images_per_prompt=k, seed=s, mode=cfg["mode"],
                   steps={f: steps for f in cfg["factors"]})  # fmt: skip
        images, maps, fits = res.images, res.maps, res.palette_fit
    sync()
    return images, maps, time.perf_counter() - t0, fits


def _load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _height(path: Path) -> int:
    with Image.open(path) as im:
        return im.height


def render_px(size: int) -> int:
    """The size real renders are drawn at to stand beside ``size``-px samples: the same, rounded
    down to a multiple of 8, within the 64-512 px the world renders."""
    return min(512, max(64, size - size % 8))


def reference_sets(wanted: set[tuple[str, int]], n: int, seed: int,
                   prompts: list[str] | None) -> dict[tuple[str, int], torch.Tensor]:  # fmt: skip
    """``n`` real renders (see :func:`real_reference`) per (key, size) in ``wanted``, key "image" or
    a condition map, as (n, 3, H, W) in [0, 1] at :func:`render_px` of that size: each map is compared
    with real maps of its own size, a 64-px seg map with 64-px renders' seg maps even beside a
    128-px image. The renders are drawn once per size."""
    out = {}
    for size in sorted({s for _, s in wanted}):
        keys = sorted(k for k, s in wanted if s == size)
        ref = real_reference(n, render_px(size), [k for k in keys if k != "image"], seed, prompts)
        out.update({(k, size): _unit(ref[k]) for k in keys})
    return out


def _unit(arrs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255


def _distribution(real: torch.Tensor, fake: torch.Tensor, clip, prefix: str) -> dict:
    """Fréchet distance and precision/recall of ``fake`` vs ``real`` in MiniCLIP image features."""
    out = {f"{prefix}_fd": None, f"{prefix}_precision": None, f"{prefix}_recall": None}
    if min(len(real), len(fake)) >= 2:
        out[f"{prefix}_fd"] = round(frechet_distance(real, fake, clip.images), 4)
    if min(len(real), len(fake)) > K_NEIGHBOURS:
        fr = torch.cat([clip.images(real[i : i + 64]) for i in range(0, len(real), 64)])
        ff = torch.cat([clip.images(fake[i : i + 64]) for i in range(0, len(fake), 64)])
        pr = precision_recall(fr, ff, k=K_NEIGHBOURS)
        out[f"{prefix}_precision"], out[f"{prefix}_recall"] = round(pr["precision"], 4), round(pr["recall"], 4)
    return out


@torch.no_grad()
def judged(judge: Judge, images: list[np.ndarray], batch: int = 64) -> tuple[np.ndarray, torch.Tensor]:
    """The judge's segmentation (N, H, W) uint8 and depth (N, 1, H, W) of images, in batches."""
    dev = next(judge.parameters()).device
    labels, depths = [], []
    for i in range(0, len(images), batch):
        logits, depth = judge.predict(_unit(images[i : i + batch]).mul(2).sub(1).to(dev))
        labels.append(logits.argmax(1).cpu().numpy().astype(np.uint8))
        depths.append(depth.cpu())
    return np.concatenate(labels), torch.cat(depths)


def consistency(judge: Judge, images: list[np.ndarray], seg_maps: list[np.ndarray] | None,
                depth_maps: list[np.ndarray] | None,
                seen: tuple[np.ndarray, torch.Tensor] | None = None, *,
                sketch_maps: list[np.ndarray] | None = None, normal_maps: list[np.ndarray] | None = None) -> dict:  # fmt: skip
    """The judge's view of each image vs the maps it was generated from, at the maps' size.

    A seg map (a palette image, or its (H, W) class ids if already decoded): the mIoU over the
    classes in either, accumulated over all images (pixels the decoded map leaves void are not
    scored, and their share is ``seg_void_fraction``), and the share of scored pixels where the
    two agree (``consistency_pixel_acc``: unlike the mIoU, not pulled to 0 by a map's speck
    classes, each of which counts as one class of IoU 0). A depth map: the MAE in [0, 1] against
    the judge's depth (``consistency_depth_mae``). A sketch map: the mean per-map Pearson
    correlation with the image's own sketch (``consistency_sketch_corr``;
    :func:`~fgdm.world.render.sketch_from`, the judge's class map standing in for the render's
    label maps). A normal map: the mean angle in degrees to the normals of the judge's depth
    (``consistency_normal_deg``). The judge's depth and sketch are resized to each map's size with
    antialiasing (depth was not until 2026-12-07, which aliased a 128-px depth read at 64 px).
    Depth, sketch and normals are also scored against the next image's map (``*_shuffled``: the
    level without following one's own map; None for a single image). ``seen``: :func:`judged` of
    the images, if already computed."""
    out = {}
    pred, depth = seen if seen is not None else judged(judge, images)
    if seg_maps is not None:
        inter, union = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)
        void = total = agree = 0
        for p, m in zip(pred, seg_maps, strict=True):
            want = decode_segmentation(m) if np.ndim(m) == 3 else np.asarray(m)
            p = resize_labels(p, want.shape[0]) if p.shape != want.shape else p
            known = want != VOID_ID  # pixels the map does not label (black, or undecodable) are not scored
            void, total = void + int((~known).sum()), total + want.size
            p, want = p[known], want[known]
            agree += int((p == want).sum())
            for c in np.union1d(np.unique(p), np.unique(want)):
                a, b = p == c, want == c
                inter[c] += (a & b).sum()
                union[c] += (a | b).sum()
        seen = union > 0
        out["consistency_miou"] = round(float((inter[seen] / union[seen]).mean()), 4) if seen.any() else None
        out["consistency_pixel_acc"] = round(agree / max(1, total - void), 4)
        out["seg_void_fraction"] = round(void / max(1, total), 4)
    if depth_maps is not None:
        want = [decode_depth(m) for m in depth_maps]
        got = [_resized(d.float().numpy(), w.shape) for d, w in zip(depth[:, 0].cpu(), want, strict=True)]
        out |= _with_chance("consistency_depth_mae", lambda a, b: map_agreement(a, b)["mae"], got, want)
    if sketch_maps is not None:
        want = [decode_sketch(m) for m in sketch_maps]
        at = [p if p.shape == im.shape[:2] else resize_labels(p, im.shape[1::-1]) for im, p in zip(images, pred, strict=True)]
        got = [_resized(sketch_from(im, [p]), w.shape) for im, p, w in zip(images, at, want, strict=True)]
        out |= _with_chance("consistency_sketch_corr", lambda a, b: map_agreement(a, b)["corr"], got, want)
    if normal_maps is not None:
        want = [decode_normals(m) for m in normal_maps]
        got = [normals_from_depth(_resized(d.float().numpy(), w.shape[:2])) for d, w in zip(depth[:, 0], want, strict=True)]
        out |= _with_chance("consistency_normal_deg", lambda a, b: normal_agreement(a, b)["deg"], got, want)
    return out


def _resized(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A one-channel float map resized (bilinear, antialiased) to ``shape[:2]``."""
    if a.shape == tuple(shape[:2]):
        return a
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(x, size=tuple(shape[:2]), mode="bilinear", antialias=True)[0, 0].numpy()


def _with_chance(key: str, score, got: list[np.ndarray], want: list[np.ndarray]) -> dict:
    """``score`` of each image's map against its own, and against the next image's (chance)."""
    own = score(got, want)
    chance = score(got, want[1:] + want[:1]) if len(want) > 1 else None
    return {key: own, f"{key}_shuffled": chance}


def _objects(recs: list[dict], key: str) -> list[tuple[str, ...]]:
    """The prompt's thing categories for every file of ``key`` in the records, in file order."""
    return [parse_prompt(r["prompt"]).things for r in recs for _ in r["files"].get(key, [])]


def object_counts(labels: list[np.ndarray], objects: list[tuple[str, ...]], key: str,
                  per_item: list | None = None) -> dict:  # fmt: skip
    """Object recall of label maps against their prompts' thing categories (the presence rule of
    :mod:`fgdm.compliance.recall`, as SBPC scores a map and the judge an image), averaged over the
    maps whose prompt names a known object, and the thing categories present per map (a map that
    scatters specks of many classes has many). ``per_item``, if given, receives every map's recall
    (None where the prompt names no known object), for paired comparisons."""
    present = [present_categories(m) for m in labels]
    recalls = [object_recall(o, p) if o else None for o, p in zip(objects, present, strict=True)]
    if per_item is not None:
        per_item[:] = recalls
    scored = [r for r in recalls if r is not None]
    return {f"{key}_object_recall": round(float(np.mean(scored)), 4) if scored else None,
            f"{key}_things_per_map": round(float(np.mean([len(p) for p in present])), 3)}


def _paired(row: dict, mine: dict[str, list], main: dict[str, list]) -> None:
    """An ablation row's object recall against its main row's, map by map and image by image (same
    prompts and seeds): ``<key>_object_recall_vs_main`` = {better, worse, p} (the sign test)."""
    for key, b in mine.items():
        a = main.get(key)
        if a is not None and len(a) == len(b):
            pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
            t = sign_test([x for x, _ in pairs], [y for _, y in pairs])
            row[f"{key}_object_recall_vs_main"] = {**t, "p": float(f"{t['p']:.3g}")}


def run_fgdm_quality(graph: FactorGraphPipeline, clip, prompts: list[str], out: Path, *,
                     judge: Judge | None = None, sets: list[list[str]] | None = None,
                     modes: list[str] = ("joint", "ancestral"),
                     ablations: list[tuple[str, FactorGraphPipeline]] = (), images_per_prompt: int = 4, steps: int = 25,
                     seed: int = 0, n_real: int = 500, real_seed: int = 40_000, reference: str = "prompts",
                     progress: bool = True) -> dict:  # fmt: skip
    """Sample every configuration on every prompt (resumable in ``out``) and measure it.

    ``reference``: the real renders the distances are taken to, "prompts" (renders of these
    prompts) or "world" (of the world at large): see :func:`real_reference`.
    Returns ``{"rows": [...], "configs": [...]}``; one row per configuration (see the module doc).
    """
    from .prompts import REFERENCE_NEEDS_OBJECTS, prompt_entries

    if not prompts:
        raise ValueError("prompts is empty")
    if reference not in ("prompts", "world"):
        raise ValueError(f"reference must be 'prompts' or 'world', got {reference!r}")
    prompt_entries(prompts, need_objects=REFERENCE_NEEDS_OBJECTS if reference == "prompts" else None)  # fail early
    sets = [list(s) for s in (sets or default_sets(graph))]
    for s in sets:
        bad = [f for f in s if f not in graph.spec.factors]
        if bad or not s:
            raise ValueError(f"factor set {s}: {bad or 'empty'} not in the graph {list(graph.spec.factors)}")
    bad_modes = [m for m in modes if m not in ("joint", "ancestral")]
    if bad_modes or not modes:
        raise ValueError(f"modes must be joint and/or ancestral, got {list(modes)}")
    labels = [label for label, _ in ablations]
    if len(set(labels)) != len(labels) or any(not label.strip() for label in labels):
        raise ValueError(f"ablation labels must be distinct and non-empty, got {labels}")
    swapped = {label: graph.differing_factors(other) for label, other in ablations}
    for label, names in swapped.items():
        if not names:
            raise ValueError(f"ablation {label!r}: its graph has no factor of its own (all come from the same runs)")
    ablated = {label: graph.with_factors_from(other, swapped[label]) for label, other in ablations}
    configs = configurations(sets, list(modes), [(label, swapped[label]) for label in labels])
    base = Text2ImagePipeline(graph.base)
    bar = tqdm(total=len(prompts) * len(configs), desc="fgdm quality", disable=not progress)
    for p, text in enumerate(prompts):
        for cfg in configs:
            folder = out / "samples" / _slug(cfg["config"])
            rec = folder / f"p{p:05d}.json"
            if not rec.exists():
                folder.mkdir(parents=True, exist_ok=True)
                images, maps, seconds, fits = _sample(cfg, text, p, images_per_prompt, seed, steps,
                                                      graph=graph, ablated=ablated, base=base)  # fmt: skip
                files = {"image": []} | {c: [] for c in maps}
                for k, im in enumerate(images):
                    im.save(folder / f"p{p:05d}-{k}-image.png")
                    files["image"].append(f"p{p:05d}-{k}-image.png")
                for c, ms in maps.items():
                    for k, m in enumerate(ms):
                        Image.fromarray(m).save(folder / f"p{p:05d}-{k}-{c}.png")
                        files[c].append(f"p{p:05d}-{k}-{c}.png")
                tmp = rec.with_suffix(".partial")
                tmp.write_text(json.dumps({"prompt": text, "config": cfg["config"], "seconds": seconds,
                                           "samples": max(len(v) for v in files.values()), "files": files,
                                           "palette_fit": fits}))  # fmt: skip
                tmp.replace(rec)
            bar.update()
    bar.close()
    return {"rows": measure(out, configs, prompts, clip, judge=judge, n_real=n_real, real_seed=real_seed,
                            reference=reference),
            "configs": configs}  # fmt: skip


def measure(out: Path, configs: list[dict], prompts: list[str], clip, *, judge: Judge | None = None,
            n_real: int = 500, real_seed: int = 40_000, reference: str = "prompts") -> list[dict]:  # fmt: skip
    """The table's rows from the samples cached in ``out``."""
    recs = {c["config"]: [json.loads((out / "samples" / _slug(c["config"]) / f"p{p:05d}.json").read_text())
                          for p in range(len(prompts))] for c in configs}  # fmt: skip
    conditions = sorted({c for rs in recs.values() for r in rs for c in r["files"] if c != "image"})
    # real renders of each map at the size it was sampled at (a condition drawn at 64 px beside a
    # 128-px image is compared with 64-px renders, so neither side is blurred more than the other)
    px = {(name, key): _height(out / "samples" / _slug(name) / files[0])
          for name, rs in recs.items() for key, files in rs[0]["files"].items() if files}  # fmt: skip
    real = reference_sets({(key, s) for (_, key), s in px.items()}, n_real, real_seed,
                          prompts if reference == "prompts" else None)  # fmt: skip
    rows, items = [], {}
    for cfg in configs:
        folder = out / "samples" / _slug(cfg["config"])
        rs = recs[cfg["config"]]
        got = {key: [_load_rgb(folder / f) for r in rs for f in r["files"].get(key, [])]
               for key in ["image", *conditions]}  # fmt: skip
        n_img = sum(r["samples"] for r in rs)
        row = {"config": cfg["config"], "prompts": len(rs), "samples": n_img,
               "seconds_per_image": round(sum(r["seconds"] for r in rs) / max(1, n_img), 4),
               "reference_px": {key: render_px(s) for (c, key), s in px.items() if c == cfg["config"]}}  # fmt: skip
        if got["image"]:
            fake = _unit(got["image"])
            row.update(_distribution(real["image", px[cfg["config"], "image"]], fake, clip, "image"))
            texts = [r["prompt"] for r in rs for _ in r["files"]["image"]]
            row["clip_score"] = round(clip_score(clip.images(fake), clip.texts(texts)), 3)
        for c in conditions:
            if got[c]:
                row.update(_distribution(real[c, px[cfg["config"], c]], _unit(got[c]), clip, c))
        segs, deps = got.get("seg") or None, got.get("depth") or None
        items[cfg["config"]] = per = {"seg": [], "image": []}
        labels = [decode_segmentation(m) for m in segs] if segs else None  # once, for recall and consistency
        if labels:
            row.update(object_counts(labels, _objects(rs, "seg"), "seg", per["seg"]))
            fits = [f for r in rs for f in (r.get("palette_fit") or [])]  # samples cached before fits were kept: none
            row["seg_palette_fit"] = round(float(np.mean(fits)), 4) if len(fits) == len(segs) else None
        seen = judged(judge, got["image"]) if judge is not None and got["image"] else None
        if seen is not None:
            row.update(object_counts(list(seen[0]), _objects(rs, "image"), "image", per["image"]))
        if cfg.get("ablation"):  # against the same factors and mode without the swap
            _paired(row, per, items.get(f"FG-DM {','.join(cfg['factors'])} {cfg['mode']}", {}))
        if seen is not None and (segs or deps or got.get("sketch") or got.get("normal")):  # maps and images pair one to one
            row.update(consistency(judge, got["image"], labels, deps, seen,
                                   sketch_maps=got.get("sketch") or None, normal_maps=got.get("normal") or None))
        rows.append(row)
    return rows


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, dict) and {"better", "worse", "p"} <= set(v):  # a paired comparison
        return f"+{v['better']} / -{v['worse']} (p {v['p']})"
    if isinstance(v, dict):  # e.g. reference_px
        return ", ".join(f"{k} {x}" for k, x in v.items())
    return str(v)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table; columns that no row has are left out, missing values are '—'."""
    order = ["config", "image_fd", "image_precision", "image_recall", "clip_score"]
    extra = [k for r in rows for k in r if k not in order and k not in ("prompts", "samples", "seconds_per_image")]
    cols = [c for c in order if any(c in r for r in rows)]
    cols += list(dict.fromkeys(extra)) + ["seconds_per_image"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def sample_sheet(out: Path, configs: list[dict], prompts: list[str], n_prompts: int = 4, cell: int = 128) -> Image.Image:
    """A contact sheet from the cached samples: per prompt, one row per configuration (first
    sample): each condition map it sampled, its image, and the base model's image beside it."""
    conditions = []
    for c in configs:
        for f in c.get("factors", []):
            if f != "image" and f not in conditions:
                conditions.append(f)
    rows, captions = [], []
    blank = np.full((cell, cell, 3), 255, np.uint8)
    for p in range(min(n_prompts, len(prompts))):
        base_img = blank
        for c in configs:
            r = json.loads((out / "samples" / _slug(c["config"]) / f"p{p:05d}.json").read_text())
            if c["kind"] == "base":
                base_img = _load_rgb(out / "samples" / _slug(c["config"]) / r["files"]["image"][0])
        for c in configs:
            if c["kind"] == "base":
                continue
            folder = out / "samples" / _slug(c["config"])
            r = json.loads((folder / f"p{p:05d}.json").read_text())
            row = [_load_rgb(folder / r["files"][m][0]) if m in r["files"] else blank for m in conditions]
            row.append(_load_rgb(folder / r["files"]["image"][0]) if r["files"]["image"] else blank)
            row.append(base_img)
            rows.append(row)
            captions.append(f"{prompts[p]}  [{c['config']}]")
    return contact_sheet(rows, headers=[*conditions, "FG-DM image", "base model"], captions=captions, cell=cell)

"""Does the image factor follow a *given* segmentation map? (FG-DM issue 5's consistency, without the
seg factor in the way.)

For N held-out renders (world seed 50000, never trained on): the render's caption and seg map go
to the graph's image factor; the judge segments the image, and `consistency` (fgdm eval fgdm's
columns: mIoU and pixel agreement) scores it against the map. The base model on the same caption
and seed, which never sees the map, gives the level reached by the caption alone. Every row also
gives the judge's object recall of the caption's things in the images.

With ``--sampled`` the same captions also go through the seg factor, and the image is scored
against the *sampled* map: "joint" and "ancestral" sampling of seg and image, and "sampled map,
re-painted": the sampled map decoded to classes, painted with the exact palette and given to the
image factor — the map its labels describe, in the colours the image factor was trained on. Their
seg maps' palette fit is reported with them.

With ``--neutral`` the image factor is also given the map with the caption withheld: the neutral
caption "a scene." in place of the render's own (the base model with that caption too, for the level
of no information). Its object recall, still scored on the render's own caption's objects, says how
much of *which* objects the image factor reads from the map rather than from the caption.

With ``--cond depth sketch normal`` (any of them) the image factor is also given that real condition
map, alone and with seg, and every row given a real map is also scored on it: depth MAE, the
correlation of the image's own sketch with the sketch map, the angle between the normals of the
judge's depth and the normal map (``fgdm eval fgdm``'s consistency columns; the base model's row is
the level of an image that never saw the map).

With ``--prompts FILE`` the scenes are not held-out world samples but, for each of the file's first N
prompts, the world render showing exactly its objects that ``fgdm eval sbpc``'s real-render row draws
(the same seed, 1000 x the prompt's index), given with the prompt as its caption: dense prompts' maps.

    python scripts/image_factor_follows_map.py --graph runs/train/graph_cpu --n 32 [--judge J] [--sampled] [--neutral]
    python scripts/image_factor_follows_map.py --graph runs/graph_conds --n 24 --cond depth sketch normal
    python scripts/image_factor_follows_map.py --graph G --prompts prompts/dense_6to8_200.json --n 30 --neutral
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from fgdm.eval.fgdm_quality import consistency, judged, object_counts
from fgdm.eval.prompts import load_prompt_entries
from fgdm.eval.sbpc_bench import prompt_render
from fgdm.models.judge import load_judge
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.pipelines.text2image import Text2ImagePipeline
from fgdm.world.conditions import encode_segmentation, resize_image, resize_labels
from fgdm.world.dataset import make_sample
from fgdm.world.vocab import parse_prompt

NEUTRAL = "a scene."  # a caption that names no object
CONDS = ("depth", "sketch", "normal")  # the condition maps --cond can give besides seg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", required=True)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=50000, help="world seed of the held-out renders")
    ap.add_argument("--prompts", default=None, help="render each of this file's first --n prompts instead (as fgdm eval sbpc)")
    ap.add_argument("--judge", default=None, help="judge folder (default: the shipped judge)")
    ap.add_argument("--sampled", action="store_true", help="also score images against seg maps the graph samples")
    ap.add_argument("--cond", nargs="+", default=[], choices=CONDS,
                    help="also give the image factor these real maps, each alone and with seg, and score every row on them")
    ap.add_argument("--neutral", action="store_true", help=f"also give the map with the caption {NEUTRAL!r} in place of the render's")
    a = ap.parse_args()
    if a.n < 1:
        ap.error(f"--n must be >= 1, got {a.n}")
    try:  # a bad folder or file is the user's input: an argument error, not a traceback
        graph, judge = FactorGraphPipeline.from_pretrained(a.graph), load_judge(a.judge)
        # (index in the file, text, objects): the seed and the objects as fgdm eval sbpc's
        entries = None if not a.prompts else [
            (j, e.text, list(parse_prompt(e.text).things)) for j, e in enumerate(load_prompt_entries(a.prompts))
            if parse_prompt(e.text).things]  # fmt: skip
    except ValueError as e:
        ap.error(str(e))
    if entries is not None and len(entries) < a.n:
        ap.error(f"--prompts {a.prompts!r} has {len(entries)} prompts naming known objects, fewer than --n {a.n}")
    image = graph.spec.factors.get("image")
    if image is None or "seg" not in image.parents:
        ap.error(f"--graph {a.graph!r} has no image factor conditioned on seg")
    a.cond = list(dict.fromkeys(a.cond))  # a map named twice is given once
    unread = [c for c in a.cond if c not in image.parents]
    if unread:
        ap.error(f"--cond: the image factor of --graph {a.graph!r} is not conditioned on {', '.join(unread)} (its "
                 f"parents: {list(image.parents)})")
    base = Text2ImagePipeline(graph.base)
    size = graph.native_size()
    names = ["image factor, given the map", "base model, caption only"]
    for c in a.cond:
        names += [f"image factor, given {c}", f"image factor, given seg and {c}"]
    if a.neutral:
        names += [f"image factor, given the map, caption {NEUTRAL!r}", f"base model, caption {NEUTRAL!r}"]
    if a.sampled:
        names += ["joint (seg, image)", "ancestral (seg, image)", "sampled map, re-painted"]
    got = {n: {"images": [], "maps": [], "fits": [], "seconds": 0.0, **{c: [] for c in CONDS}} for n in names}

    def add(name: str, t0: float, out, seg: np.ndarray | None = None, fits: list[float] | None = None,
            real: dict[str, np.ndarray] | None = None) -> None:  # fmt: skip
        """One image of row ``name``, scored against ``seg`` (default: the map the call sampled) and
        the ``real`` condition maps of ``--cond`` (rows without them are not scored on them)."""
        g = got[name]
        g["seconds"] += time.perf_counter() - t0
        g["images"].append(np.asarray(out.images[0].convert("RGB")))
        g["maps"].append(seg if seg is not None else out.maps["seg"][0])
        for c, m in (real or {}).items():
            g[c].append(m)
        g["fits"] += fits if fits is not None else getattr(out, "palette_fit", None) or []

    captions = []
    for i in tqdm(range(a.n), desc="renders"):
        if entries is None:
            s = make_sample(i, seed=a.seed, size=max(64, size))  # the world renders from 64 px
            text, scene = s.caption.text, s.render
        else:
            j, text, objects = entries[i]
            scene = prompt_render(text, objects, 1000 * j, size)
        labels = scene.seg
        captions.append(text)
        seg = encode_segmentation(resize_labels(labels, size) if labels.shape[0] != size else labels)
        maps = scene.conditions() if a.cond else {}  # every map encoded only when one is given
        real = {c: maps[c] if maps[c].shape[0] == size else resize_image(maps[c], size) for c in a.cond}
        t0 = time.perf_counter()
        add(names[0], t0, graph(text, factors=["image"], given={"seg": seg}, seed=i), seg, real=real)
        t0 = time.perf_counter()
        add(names[1], t0, base(text, seed=i), seg, real=real)
        for c in a.cond:
            for name, given in ((f"image factor, given {c}", {c: real[c]}),
                                (f"image factor, given seg and {c}", {"seg": seg, c: real[c]})):  # fmt: skip
                t0 = time.perf_counter()
                add(name, t0, graph(text, factors=["image"], given=given, seed=i), seg, real=real)
        if a.neutral:
            t0 = time.perf_counter()
            add(f"image factor, given the map, caption {NEUTRAL!r}", t0,
                graph(NEUTRAL, factors=["image"], given={"seg": seg}, seed=i), seg, real=real)
            t0 = time.perf_counter()
            add(f"base model, caption {NEUTRAL!r}", t0, base(NEUTRAL, seed=i), seg, real=real)
        if a.sampled:
            for name, mode in (("joint (seg, image)", "joint"), ("ancestral (seg, image)", "ancestral")):
                t0 = time.perf_counter()
                add(name, t0, graph(text, factors=["seg", "image"], seed=i, mode=mode))
            t0 = time.perf_counter()
            drawn = graph(text, factors=["seg"], seed=i)
            painted = drawn.maps["seg"][0]  # the sampled map decoded and painted with the exact palette
            out = graph(text, factors=["image"], given={"seg": painted}, seed=i)
            add("sampled map, re-painted", t0, out, painted, drawn.palette_fit)
    objects = [parse_prompt(c).things for c in captions]
    rows = {}
    for name, g in got.items():
        seen = judged(judge, g["images"])
        rows[name] = consistency(judge, g["images"], g["maps"], g["depth"] or None, seen,
                                 sketch_maps=g["sketch"] or None, normal_maps=g["normal"] or None)  # fmt: skip
        rows[name].update(object_counts(list(seen[0]), objects, "image"))
        if g["fits"]:
            rows[name]["seg_palette_fit"] = round(float(np.mean(g["fits"])), 4)
        rows[name]["seconds_per_image"] = round(g["seconds"] / a.n, 3)
    where = {"prompts": a.prompts} if entries is not None else {"world_seed": a.seed}
    print(json.dumps({"graph": a.graph, "n": a.n, **where, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

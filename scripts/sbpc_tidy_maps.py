"""Does tidying SBPC's chosen seg map (dropping stray specks and unnamed objects) help the image factor?

SBPC's chosen maps for dense prompts are patchworks: a prompt object lies in ~5 separate regions, beside
~18 thing classes the prompt does not name (docs/results.md, "Drawing the map one object at a time").
For each of the first prompts of a prompt file this takes SBPC's chosen map (``fgdm eval sbpc``'s seed
for prompt p, 1000 x p; N candidates, t condition steps, at ``--cond-size``) and a tidied copy
(:func:`tidy_map`: every region of a thing class the prompt does not name, and every region of a named
class smaller than ``--keep`` times that class's largest, filled with the stuff class around it), then
renders each with the image factor plainly and one object at a time (``split_render``, the whole
prompt's weight 0), all with the chosen candidate's seed, and scores each image's object recall with
the judge. Prints per-arm means and sign tests as JSON, writes ``results.json`` and ``sheet.png``
(the first 6 prompts: map, tidied map, and the four images) under OUT.

    python scripts/sbpc_tidy_maps.py --prompts prompts/dense_6to8_200.json --n-prompts 30 --out runs/sbpc-tidy30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fgdm.compliance.recall import object_recall, present_categories
from fgdm.compliance.sbpc import sbpc
from fgdm.editing.maps import _ring  # the ring editing's delete takes the background from
from fgdm.eval.metrics import sign_test
from fgdm.models.judge import load_judge
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.pipelines.split import split_render
from fgdm.world.categories import VOID_ID, category
from fgdm.world.conditions import connected_components, encode_segmentation, thing_instances
from fgdm.world.prompts import read_prompts
from fgdm.world.vocab import parse_prompt

ARMS = ("plain", "plain_split", "tidy", "tidy_split")


def tidy_map(labels: np.ndarray, objects: list[str], keep: float = 0.5) -> np.ndarray:
    """``labels`` with every thing region (4-connected) of a class not in ``objects``, and every region
    of a named class smaller than ``keep`` times its class's largest, filled with the most common stuff
    class within 2 pixels of it (of the whole map if none is), the way ``fgdm edit --delete`` fills an object."""
    out = np.array(labels, copy=True)
    inst = thing_instances(out)
    named = {category(o).id for o in objects}
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    cls = {i: int(out[inst == i][0]) for i in ids.tolist()}
    largest: dict[int, int] = {}
    for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
        largest[cls[i]] = max(largest.get(cls[i], 0), c)
    drop = np.zeros(out.shape, bool)
    for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
        if cls[i] not in named or c < keep * largest[cls[i]]:
            drop |= inst == i
    is_stuff = lambda c: c != VOID_ID and not category(int(c)).is_thing
    lab, n = connected_components(drop)
    for k in range(1, n + 1):
        m = lab == k
        stuff = [c for c in out[_ring(m)] if is_stuff(c)]
        if not stuff:
            stuff = [c for c in out[~drop] if is_stuff(c)] or [VOID_ID]
        out[m] = np.bincount(np.asarray(stuff, np.int64)).argmax()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--n-prompts", type=int, default=30)
    ap.add_argument("--graph", default=None, help="FG-DM graph folder (default: the shipped graph)")
    ap.add_argument("--judge", default=None, help="judge folder (default: the shipped judge)")
    ap.add_argument("--n", type=int, default=10, help="SBPC's candidates")
    ap.add_argument("--cond-steps", type=int, default=10)
    ap.add_argument("--cond-size", type=int, default=64)
    ap.add_argument("--keep", type=float, default=0.5, help="a named class's regions kept: those >= KEEP x its largest")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    for name in ("n_prompts", "n", "cond_steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.keep <= 1:
        ap.error(f"--keep must be in [0, 1], got {args.keep}")
    out = Path(args.out)
    if (out / "results.json").exists():  # never overwrite a finished run
        ap.error(f"--out {str(out)!r} already holds results.json; choose another folder")
    try:
        prompts = read_prompts(args.prompts, "--prompts")[: args.n_prompts]
        graph, judge = FactorGraphPipeline.from_pretrained(args.graph), load_judge(args.judge)
    except ValueError as e:
        ap.error(str(e))
    if not {"seg", "image"} <= set(graph.spec.factors) or "seg" not in graph.spec.factors["image"].parents:
        ap.error(f"--graph: needs a seg factor and an image factor that reads it; this graph has {list(graph.spec.factors)}")
    out.mkdir(parents=True, exist_ok=True)
    rows, tiles = [], []
    for p, prompt in enumerate(tqdm(prompts, desc="tidy maps")):
        objects = list(parse_prompt(prompt).things)
        if not objects:
            ap.error(f"--prompts: prompt {p} ({prompt!r}) names no known object; the script scores object recall")
        try:  # e.g. a --cond-size the seg factor cannot sample
            res = sbpc(graph, prompt, n=args.n, cond_steps=args.cond_steps, cond_size=args.cond_size, seed=1000 * p,
                       factors=[])  # fmt: skip
        except ValueError as e:
            ap.error(str(e))
        seed, maps = res.candidates[res.chosen].seed, {"plain": res.labels}
        maps["tidy"] = tidy_map(res.labels, objects, args.keep)
        row = {"prompt": prompt, "objects": objects, "recall": {}}
        row["map_recall"] = {k: object_recall(objects, present_categories(v)) for k, v in maps.items()}
        images = []
        for name in ARMS:
            seg = maps[name.split("_")[0]]
            if name.endswith("_split"):
                image = split_render(graph, prompt, seg, seed=seed, whole=0.0, objects=objects).images[0]
            else:
                image = graph(prompt, factors=[f for f in graph.spec.factors if f != "seg"], given={"seg": seg},
                              seed=seed).images[0]  # fmt: skip
            row["recall"][name] = object_recall(objects, present_categories(judge.segment_images([image])[0]))
            images.append(np.asarray(image.convert("RGB")))
        rows.append(row)
        if p < 6:
            side = images[0].shape[0]
            pal = [np.asarray(Image.fromarray(encode_segmentation(m)).resize((side, side), Image.NEAREST)) for m in maps.values()]
            tiles.append(np.concatenate(pal + images, 1))
    mean = lambda xs: round(float(np.mean(xs)), 4)
    rec = {a: [r["recall"][a] for r in rows] for a in ARMS}
    summary = {"prompts": len(rows), "keep": args.keep,
               "map_recall": {k: mean([r["map_recall"][k] for r in rows]) for k in ("plain", "tidy")},
               "final_image_recall": {a: mean(v) for a, v in rec.items()},
               "tidy_vs_plain": sign_test(rec["plain"], rec["tidy"]),
               "tidy_split_vs_plain_split": sign_test(rec["plain_split"], rec["tidy_split"])}  # fmt: skip
    (out / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    if tiles:
        Image.fromarray(np.concatenate(tiles, 0)).save(out / "sheet.png")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

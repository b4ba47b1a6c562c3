"""How whole are the prompt's objects in SBPC's chosen seg maps, against the real maps of the same prompts?

For each of the first prompts of a prompt file: SBPC's chosen map (``fgdm generate --sbpc N`` with
``--cond-steps`` and ``--cond-size``, the seed ``fgdm eval sbpc`` gives prompt p: 1000 x p) and the
real map of the world render showing exactly its objects (the map-ceiling row's), both at
``--cond-size``. Per prompt object the map shows: its area, its number of connected regions, and the
share of its pixels in the largest; per map, the thing classes it shows that the prompt does not name.
Prints the means as JSON and writes OUT (if given): the real and the chosen map side by side, a row
per prompt. Object-split rendering needs whole objects (docs/results.md, "Drawing the map one object
at a time").

    python scripts/seg_map_fragments.py --prompts prompts/dense_6to8_200.json --n-prompts 30 --out runs/seg_fragments.png
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image

from fgdm.compliance.sbpc import sbpc
from fgdm.eval.sbpc_bench import prompt_render
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.world.categories import VOID_ID, category
from fgdm.world.conditions import encode_segmentation, resize_labels, thing_instances
from fgdm.world.prompts import read_prompts
from fgdm.world.vocab import parse_prompt


def object_pieces(labels: np.ndarray, objects: list[str]) -> list[tuple[float, int, float]]:
    """(area, connected regions, largest region's share) of each of ``objects`` that ``labels`` shows."""
    inst = thing_instances(labels)
    out = []
    for o in objects:
        m = labels == category(o).id
        if m.any():
            _, counts = np.unique(inst[m], return_counts=True)
            out.append((float(m.mean()), len(counts), float(counts.max() / m.sum())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--n-prompts", type=int, default=30)
    ap.add_argument("--graph", default=None, help="FG-DM graph folder (default: the shipped graph)")
    ap.add_argument("--n", type=int, default=10, help="SBPC's candidates")
    ap.add_argument("--cond-steps", type=int, default=10)
    ap.add_argument("--cond-size", type=int, default=64)
    ap.add_argument("--out", default=None, help="a PNG of the real and the chosen maps")
    args = ap.parse_args()
    for name in ("n_prompts", "n", "cond_steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        prompts = read_prompts(args.prompts, "--prompts")[: args.n_prompts]
        graph = FactorGraphPipeline.from_pretrained(args.graph)
    except ValueError as e:
        ap.error(str(e))
    if not any(parse_prompt(p).things for p in prompts):
        ap.error(f"--prompts: none of the first {args.n_prompts} prompts of {args.prompts} names a known object")
    rows, unnamed, tiles = {"chosen": [], "real": []}, {"chosen": [], "real": []}, []
    for p, prompt in enumerate(prompts):
        objects = list(parse_prompt(prompt).things)
        if not objects:
            continue
        try:  # e.g. a --cond-size the seg factor cannot sample
            chosen = sbpc(graph, prompt, n=args.n, cond_steps=args.cond_steps, cond_size=args.cond_size, seed=1000 * p,
                          factors=[]).labels  # fmt: skip
        except ValueError as e:
            ap.error(str(e))
        real = resize_labels(prompt_render(prompt, objects, 1000 * p, graph.native_size()).seg, args.cond_size)
        for name, lab in (("chosen", chosen), ("real", real)):
            rows[name] += object_pieces(lab, objects)
            unnamed[name].append(len({category(int(v)).name for v in np.unique(lab)
                                      if v != VOID_ID and category(int(v)).is_thing} - set(objects)))  # fmt: skip
        tiles.append(np.concatenate([encode_segmentation(real), encode_segmentation(chosen)], 1))
    summary = {name: {"objects": len(r), "mean_area": round(float(np.mean([x[0] for x in r])), 4),
                      "mean_regions": round(float(np.mean([x[1] for x in r])), 2),
                      "largest_region_share": round(float(np.mean([x[2] for x in r])), 3),
                      "unnamed_thing_classes_per_map": round(float(np.mean(unnamed[name])), 2)}
               for name, r in rows.items()}  # fmt: skip
    if args.out and tiles:
        Image.fromarray(np.concatenate(tiles, 0)).save(args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

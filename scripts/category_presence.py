"""Per-category presence of a benchmark run against how often, and how large, the training world
draws each category (a figure in docs/results.md).

For every category named in the run's prompts: the share of its images in which the judge found
it, the fraction of training samples holding it and naming it in their caption (``--scenes``
samples of the world with seed ``--world-seed`` at ``--size``, as `fgdm train unet` draws them),
and the category's size. Prints the worst categories and Spearman's rank correlation of presence
with each.

    python scripts/category_presence.py runs/eval-single400-preview --scenes 5000 --world-seed 7 > out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from fgdm.world.categories import category
from fgdm.world.dataset import make_sample


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(x: list[float]) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="an `fgdm eval recall` run folder (results/*.json)")
    ap.add_argument("--scenes", type=int, default=5_000, help="training samples to count categories in")
    ap.add_argument("--world-seed", type=int, default=7, help="the world seed those samples are drawn with")
    ap.add_argument("--size", type=int, default=128, help="their render size (visibility decides what captions name)")
    ap.add_argument("--worst", type=int, default=12, help="how many of the worst categories to list")
    args = ap.parse_args(argv)
    files = sorted(Path(args.run, "results").glob("*.json"))
    if not files:
        ap.error(f"run {args.run!r} has no results/*.json")
    if args.scenes < 1:
        ap.error(f"--scenes must be >= 1, got {args.scenes}")
    found: Counter[str] = Counter()
    images: Counter[str] = Counter()
    for f in files:
        r = json.loads(f.read_text())
        for o in set(r["objects"]):
            images[o] += 1
            found[o] += o in r["present"]
    scenes: Counter[str] = Counter()
    named: Counter[str] = Counter()
    for i in range(args.scenes):
        s = make_sample(i, seed=args.world_seed, size=args.size)
        scenes.update({o.category for o in s.render.scene.objects})
        named.update({ph.category for ph in s.caption.grounding})
    rows = sorted(({"category": c, "presence": round(found[c] / images[c], 4), "images": images[c],
                    "training_scene_fraction": round(scenes[c] / args.scenes, 4),
                    "training_caption_fraction": round(named[c] / args.scenes, 4), "size": category(c).size,
                    "context": list(category(c).context)} for c in images),
                  key=lambda r: (r["presence"], r["category"]))  # fmt: skip
    pres = [r["presence"] for r in rows]
    out = {
        "run": args.run, "images": len(files), "categories": len(rows), "scenes": args.scenes,
        "world_seed": args.world_seed, "size": args.size,
        **{f"spearman_presence_vs_{k}": round(spearman(pres, [r[k] for r in rows]), 3)
           for k in ("training_scene_fraction", "training_caption_fraction", "size")},
        "worst": rows[: args.worst], "all": rows,
    }  # fmt: skip
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Render a contact sheet of an `fgdm eval recall` run folder: each prompt's images side by side,
each row captioned with its prompts' objects and in how many of their images the judge found them.

    python scripts/make_recall_sheet.py runs/eval-single-27960 docs/unet_cpu_single_27960.png --prompts 16 --per-row 4
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from fgdm.world.sheet import contact_sheet, save_sheet

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="an `fgdm eval recall` --out folder")
    ap.add_argument("out", type=Path, help="the sheet (.png)")
    ap.add_argument("--prompts", type=int, default=16, help="the first P prompts of the run")
    ap.add_argument("--per-row", type=int, default=4, help="prompts per row")
    args = ap.parse_args()
    if args.prompts < 1 or args.per_row < 1:
        ap.error(f"--prompts and --per-row must be >= 1, got {args.prompts} and {args.per_row}")
    results = sorted((args.run / "results").glob("p*.json"))
    if not results:
        raise SystemExit(f"run: {str(args.run)!r} holds no results/p*.json (not an eval recall folder?)")
    by_prompt = defaultdict(list)
    for f in results:
        r = json.loads(f.read_text())
        by_prompt[r["prompt_index"]].append(r)
    prompts = sorted(by_prompt)[: args.prompts]
    rows, captions = [], []
    for i in range(0, len(prompts) - len(prompts) % args.per_row, args.per_row):
        tiles, parts = [], []
        for p in prompts[i : i + args.per_row]:
            images = sorted(by_prompt[p], key=lambda r: r["k"])
            tiles += [np.asarray(Image.open(args.run / "images" / f"p{p:05d}-{r['k']:02d}.png").convert("RGB")) for r in images]
            found = [sum(o in r["present"] for r in images) for o in images[0]["objects"]]
            parts.append(" + ".join(images[0]["objects"]) + f" {'/'.join(map(str, found))} of {len(images)}")
        rows.append(tiles)
        captions.append(" | ".join(parts))
    if not rows:
        raise SystemExit(f"--prompts {args.prompts} is fewer than --per-row {args.per_row}: no full row")
    print(save_sheet(contact_sheet(rows, captions=captions), args.out))

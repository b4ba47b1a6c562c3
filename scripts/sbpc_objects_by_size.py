"""Which of a prompt's objects does each SBPC configuration's image lose: the small ones? The last named?

Reads a finished (or partial) ``fgdm eval sbpc`` run. For every prompt it renders again the world scene
the ``real renders (ceiling)`` row drew (the same prompt, seed and size, so the same scene), and takes
each prompt object's area in that scene's seg map, as a fraction of the image. The judge segments
every configuration's saved final image, and the object counts as found when the judge's map shows it
(the recall rule ``fgdm eval sbpc`` uses). The table gives, per band of that area, the share of objects
each configuration's images show. The ``FG-DM on real maps (map ceiling)`` configuration is given that map, so its
column says whether the image factor loses small objects only, or objects of every size. A second
table gives the same share by the object's place in the prompt (first named, second, ...).

Each object's share of its prompt's found objects is that prompt's ``final_image_recall`` in the run
(the same judge on the same saved images), so the "all" row is the run's recall weighted by objects.

    python scripts/sbpc_objects_by_size.py runs/eval-sbpc60-ceil [--json OUT.json] [--judge J]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fgdm.compliance.recall import present_categories
from fgdm.eval.prompts import load_prompt_entries
from fgdm.eval.sbpc_bench import prompt_render
from fgdm.models.judge import load_judge
from fgdm.world.categories import category
from fgdm.world.vocab import parse_prompt

BANDS = [(0.0, 0.01), (0.01, 0.02), (0.02, 0.04), (0.04, 1.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="an `fgdm eval sbpc --out` folder")
    ap.add_argument("--json", type=Path, help="write every object's area and found flags here")
    ap.add_argument("--judge", default=None, help="judge folder (default: the shipped judge)")
    args = ap.parse_args()
    rec_file = args.run / "record.json"
    if not rec_file.exists():
        raise SystemExit(f"run: {str(args.run)!r} has no record.json; is it an `fgdm eval sbpc --out` folder?")
    settings = json.loads(rec_file.read_text())["settings"]
    texts = [e.text for e in load_prompt_entries(settings["prompts"])][: settings["n_prompts"]]
    results: dict[int, list[dict]] = {}
    for f in sorted((args.run / "results").glob("p*.json")):
        r = json.loads(f.read_text())
        results.setdefault(r["prompt_index"], []).append(r)
    if not results:
        raise SystemExit(f"run: {str(args.run)!r} has no results yet")
    try:
        judge = load_judge(args.judge)
    except ValueError as e:
        raise SystemExit(f"--judge: {e}") from None
    rows = []
    for p in tqdm(sorted(results), desc="prompts"):
        text = texts[p]
        objects = list(parse_prompt(text).things)
        seed = settings["seed"] + 1000 * p  # fgdm eval sbpc's seed for prompt p
        ims = [Image.open(args.run / "images" / r["image"]).convert("RGB") for r in results[p]]
        seg = prompt_render(text, objects, seed, max(im.size[0] for im in ims)).seg  # images are at the model's size
        found = {r["config"]: present_categories(judge.segment_images([im])[0]) for r, im in zip(results[p], ims, strict=True)}
        for k, o in enumerate(objects):
            rows.append({"prompt_index": p, "object": o, "place": k + 1, "area": float((seg == category(o).id).mean()),
                         "found": {c: o in v for c, v in found.items()}})  # fmt: skip
    configs = list(dict.fromkeys(c for r in rows for c in r["found"]))
    print(f"{len(results)} prompts, {len(rows)} objects; share of objects the judge finds in each configuration's image\n")

    def table(head: str, groups: list[tuple[str, list[dict]]]) -> None:
        print(f"| {head} | objects | " + " | ".join(configs) + " |")
        print("|---|---:|" + "---:|" * len(configs))
        for label, sel in groups:
            if sel:
                cells = [f"{np.mean([r['found'][c] for r in sel if c in r['found']]):.2f}" for c in configs]
                print(f"| {label} | {len(sel)} | " + " | ".join(cells) + " |")
        print()

    table("object's area in the real map", [
        *[(f"{100 * lo:g}-{100 * hi:g}%", [r for r in rows if lo <= r["area"] < hi or (hi == 1.0 and r["area"] == 1.0)])
          for lo, hi in BANDS], ("all", rows)])  # fmt: skip
    table("object's place in the prompt", [(str(k), [r for r in rows if r["place"] == k])
                                           for k in range(1, max(r["place"] for r in rows) + 1)])  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

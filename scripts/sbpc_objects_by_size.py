"""Which of a prompt's objects does each SBPC configuration's image lose: the small ones? The last named?

Reads a finished (or partial) ``fgdm eval sbpc`` run. For every prompt it renders again the world scene
the ``real renders (ceiling)`` row drew (the same prompt, seed and size, so the same scene), and takes
each prompt object's area in that scene's seg map, as a fraction of the image. The judge segments
every configuration's saved final image, and the object counts as found when the judge's map shows it
(the recall rule ``fgdm eval sbpc`` uses). The table gives, per band of that area, the share of objects
each configuration's images show. The ``FG-DM on real maps (map ceiling)`` configuration is given that map, so its
column says whether the image factor loses small objects only, or objects of every size. A second
table gives the same share by the object's place in the prompt (first named, second, ...).

A third table says what each configuration's image holds *where* the scene puts each object: the
class the judge gives most of that object's region in the real map, which is the object's own, another
of the prompt's objects, a thing the prompt does not name, or stuff (background). For the map-ceiling
configuration, given that very map, it separates "not drawn" from "drawn as something else"; for the
others, which drew their own layout, it is the chance level of a region. A fourth gives the thing classes
the judge finds per image: of the prompt's, others, all.

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

from fgdm.compliance.recall import VERDICTS, present_categories, region_verdict
from fgdm.eval.prompts import load_prompt_entries
from fgdm.eval.sbpc_bench import prompt_render
from fgdm.models.judge import load_judge
from fgdm.world.categories import category
from fgdm.world.conditions import resize_labels
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
    rows, classes = [], {}
    for p in tqdm(sorted(results), desc="prompts"):
        text = texts[p]
        objects = list(parse_prompt(text).things)
        seed = settings["seed"] + 1000 * p  # fgdm eval sbpc's seed for prompt p
        ims = [Image.open(args.run / "images" / r["image"]).convert("RGB") for r in results[p]]
        seg = prompt_render(text, objects, seed, max(im.size[0] for im in ims)).seg  # images are at the model's size
        segs = {r["config"]: judge.segment_images([im])[0] for r, im in zip(results[p], ims, strict=True)}  # sizes differ
        found = {c: present_categories(s) for c, s in segs.items()}
        for c, f in found.items():
            classes.setdefault(c, []).append((len(f & set(objects)), len(f - set(objects))))
        for k, o in enumerate(objects):
            region = seg == category(o).id
            rows.append({"prompt_index": p, "object": o, "place": k + 1, "area": float(region.mean()),
                         "found": {c: o in v for c, v in found.items()},
                         "region": {c: region_verdict(resize_labels(s, seg.shape[0])[region], o, objects)
                                    for c, s in segs.items()}})  # fmt: skip
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
    print("| what the judge gives most of each object's real-map region | " + " | ".join(configs) + " |")
    print("|---|" + "---:|" * len(configs))
    for v in VERDICTS:
        cells = [f"{np.mean([r['region'][c] == v for r in rows if c in r['region']]):.3f}" for c in configs]
        print(f"| {v} | " + " | ".join(cells) + " |")
    print("\n| thing classes the judge finds per image | " + " | ".join(configs) + " |")
    print("|---|" + "---:|" * len(configs))
    for label, k in (("the prompt's", 0), ("others", 1)):
        print(f"| {label} | " + " | ".join(f"{np.mean([x[k] for x in classes[c]]):.2f}" for c in configs) + " |")
    print("| all | " + " | ".join(f"{np.mean([sum(x) for x in classes[c]]):.2f}" for c in configs) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

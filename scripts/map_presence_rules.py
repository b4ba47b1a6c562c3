"""Which presence rule should SBPC score its candidate maps with? ("area" or "component")

SBPC keeps the candidate segmentation map with the highest object recall. A class's total area
(``rule="area"``, the judge's rule for images) lets scattered specks of a wrongly coloured map add
up to a "present" object; ``rule="component"`` asks for one connected region that large. The
better rule is the one whose map recall predicts the recall of the *image* rendered from the map.

For P prompts, N candidate maps each (the seeds `fgdm eval sbpc` uses), every candidate is
rendered by the image factor and the judge scores the image. Reported per rule: the correlation
of map recall with image recall over all candidates, and the image recall of the candidate the
rule would keep at N and at N/2 (SBPC's choice rule; the oracle and a random pick beside them).
With ``--real R``: on R held-out renders at the candidate size, the fraction of really present
objects each rule finds in the true map (a rule that drops occluded fragments shows here).
Also per candidate its map's palette fit (`fgdm.world.conditions.palette_fit`), and in the summary
whether it predicts the image: its correlation with image recall (over all candidates and within
a prompt) and the image recall of the pick when it, not the area, breaks ties in map recall.

    python scripts/map_presence_rules.py --graph runs/train/graph_cpu --prompts prompts/dense_6to8_200.json \
        --n-prompts 20 --n 10 [--real 500] [--judge J] > out.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from fgdm.compliance.recall import PRESENCE_RULES, object_recall, present_categories
from fgdm.compliance.sbpc import Candidate, choose, score_map
from fgdm.models.judge import load_judge
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.world.categories import category
from fgdm.world.conditions import resize_labels
from fgdm.world.dataset import make_sample
from fgdm.world.prompts import read_prompts
from fgdm.world.vocab import parse_prompt


def _pearson(a: list[float], b: list[float]) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 4)


def real_maps(r: int, size: int, seed: int) -> dict:
    """Each rule's recall of the objects truly present (by area, at 128 px) in true maps at ``size``."""
    found = {rule: 0 for rule in PRESENCE_RULES}
    total = 0
    for i in tqdm(range(r), desc="real maps"):
        seg = make_sample(i, seed=seed, size=128).render.seg
        truth = present_categories(seg)
        small = resize_labels(seg, size) if size != seg.shape[0] else seg
        total += len(truth)
        for rule in PRESENCE_RULES:
            found[rule] += len(truth & present_categories(small, rule=rule))
    return {"renders": r, "world_seed": seed, "objects": total,
            "recall": {rule: round(found[rule] / max(total, 1), 4) for rule in PRESENCE_RULES}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", required=True)
    ap.add_argument("--prompts", required=True, help="text file (one prompt per line) or a MultiGen JSON list")
    ap.add_argument("--n-prompts", type=int, default=20)
    ap.add_argument("--n", type=int, default=10, help="candidate maps per prompt")
    ap.add_argument("--cond-steps", type=int, default=10)
    ap.add_argument("--cond-size", type=int, default=64)
    ap.add_argument("--image-steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0, help="the prompt on line q uses seeds seed + 1000 q + i (as fgdm eval sbpc)")
    ap.add_argument("--real", type=int, default=0, help="also check the rules on this many true maps")
    ap.add_argument("--judge", default=None, help="judge folder (default: the shipped judge)")
    a = ap.parse_args()
    for name in ("n_prompts", "n", "cond_steps", "cond_size", "image_steps"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.real < 0:
        ap.error(f"--real must be >= 0, got {a.real}")
    try:  # bad folders and files are the user's input: argument errors, not tracebacks
        graph, judge = FactorGraphPipeline.from_pretrained(a.graph), load_judge(a.judge)
        # (index in the file, prompt): a prompt's seeds follow its place in the file, as in fgdm eval sbpc
        prompts = [(q, p) for q, p in enumerate(read_prompts(a.prompts)) if parse_prompt(p).things][: a.n_prompts]
    except ValueError as e:
        ap.error(str(e))
    if "seg" not in graph.spec.factors or "image" not in graph.spec.factors:
        ap.error(f"--graph {a.graph!r} needs a seg and an image factor, has {list(graph.spec.factors)}")
    rows, t0 = [], time.perf_counter()
    for p, (q, text) in enumerate(tqdm(prompts, desc="prompts")):
        objects = list(parse_prompt(text).things)
        out = graph(text, factors=["seg"], num_images_per_prompt=a.n, seed=a.seed + 1000 * q,
                    sizes={"seg": a.cond_size}, steps={"seg": a.cond_steps})  # fmt: skip
        for i, (lab, s) in enumerate(zip(out.labels, out.seeds, strict=True)):
            img = graph(text, factors=["image"], given={"seg": lab}, seed=s, steps={"image": a.image_steps}).images[0]
            seen = present_categories(judge.segment_images([img])[0])
            row = {"prompt_index": p, "candidate": i, "seed": s, "image_recall": object_recall(objects, seen),
                   "palette_fit": round(out.palette_fit[i], 4)}  # fmt: skip
            for rule in PRESENCE_RULES:
                c = score_map(lab, objects, i, s, rule=rule)
                row[f"map_recall_{rule}"], row[f"map_area_{rule}"] = c.recall, c.area
            row["speck_classes"] = sum(1 for k in np.unique(lab) if k != 255 and category(int(k)).is_thing) - len(
                present_categories(lab, rule="component"))  # thing classes in the map that have no region >= 0.3%
            rows.append(row)
    per_prompt = [[r for r in rows if r["prompt_index"] == p] for p in range(len(prompts))]
    summary = {}
    for rule in PRESENCE_RULES:
        res = {"corr_map_vs_image_recall": _pearson([r[f"map_recall_{rule}"] for r in rows],
                                                    [r["image_recall"] for r in rows])}  # fmt: skip
        for n in sorted({a.n, max(1, a.n // 2)}):
            picks = []
            for cands in per_prompt:
                cs = [score_map_row(r, rule) for r in cands[:n]]
                picks.append(cands[choose(cs)])
            res[f"N={n}"] = {"avg_map_recall": round(float(np.mean([r[f"map_recall_{rule}"] for r in picks])), 4),
                             "image_recall_of_pick": round(float(np.mean([r["image_recall"] for r in picks])), 4)}  # fmt: skip
        summary[rule] = res
    fit = {"corr_vs_image_recall": _pearson([r["palette_fit"] for r in rows], [r["image_recall"] for r in rows])}
    within = [_pearson([r["palette_fit"] for r in c], [r["image_recall"] for r in c]) for c in per_prompt]
    within = [w for w in within if w is not None]
    fit["mean_within_prompt_corr"] = round(float(np.mean(within)), 4) if within else None
    for n in sorted({a.n, max(1, a.n // 2)}):  # ties in map recall (area rule) broken by fit, then the earliest
        picks = [max(c[:n], key=lambda r: (r["map_recall_area"], r["palette_fit"], -r["candidate"])) for c in per_prompt]
        fit[f"image_recall_of_pick_fit_tiebreak N={n}"] = round(float(np.mean([r["image_recall"] for r in picks])), 4)
    summary["palette_fit"] = fit
    for n in sorted({a.n, max(1, a.n // 2)}):
        summary[f"oracle N={n}"] = round(float(np.mean([max(r["image_recall"] for r in c[:n]) for c in per_prompt])), 4)
        summary[f"random N={n}"] = round(float(np.mean([np.mean([r["image_recall"] for r in c[:n]]) for c in per_prompt])), 4)
    record = {"graph": a.graph, "prompts": a.prompts, "n_prompts": len(prompts), "n": a.n, "cond_steps": a.cond_steps,
              "cond_size": a.cond_size, "image_steps": a.image_steps, "seed": a.seed, "summary": summary,
              "avg_speck_classes_per_map": round(float(np.mean([r["speck_classes"] for r in rows])), 3),
              "seconds": round(time.perf_counter() - t0, 1), "candidates": rows}  # fmt: skip
    if a.real:
        record["real_maps"] = real_maps(a.real, a.cond_size, seed=50000)
    print(json.dumps(record, indent=1))


def score_map_row(row: dict, rule: str):
    """The candidate of a result row as SBPC's chooser sees it under ``rule``."""
    return Candidate(row["candidate"], 0, row[f"map_recall_{rule}"], [], [], row[f"map_area_{rule}"])


if __name__ == "__main__":
    main()

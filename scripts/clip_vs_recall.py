"""Does CLIP score follow prompt compliance? Per image, a MiniCLIP's CLIP score against the judge's
object recall, on a finished `fgdm eval recall` run (a figure in docs/results.md).

For every image of the run: its CLIP score with its own prompt and with the next prompt's (a
caption it was not made for), and the judge's recall of its prompt's objects. Reported: the mean
scores; Spearman's correlation of score and recall over all images; and, within each prompt (so
that how hard a prompt is cannot make the association), the share of image pairs with different
recalls in which the one with more objects present has the higher score (0.5: CLIP score cannot
tell them apart; 1: it always can).

    fgdm eval recall --prompts P --images-from QUALITY_RUN --out RUN ...     # the judge's verdicts
    python scripts/clip_vs_recall.py RUN --clip runs/train/clip/final > out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgdm.eval.features import next_prompt_texts
from fgdm.eval.metrics import object_recall


def pair_concordance(scores: list[float], recalls: list[float], prompts: list[int]) -> tuple[float | None, int]:
    """Within each prompt, over the image pairs whose recalls differ: the share in which the image
    with the higher recall has the higher score (ties in score count one half); and how many pairs."""
    by_prompt: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    wins, n = 0.0, 0
    for idx in by_prompt.values():
        for a, b in combinations(idx, 2):
            if recalls[a] == recalls[b]:
                continue
            hi, lo = (a, b) if recalls[a] > recalls[b] else (b, a)
            wins += 1.0 if scores[hi] > scores[lo] else 0.5 if scores[hi] == scores[lo] else 0.0
            n += 1
    return (wins / n if n else None), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished fgdm eval recall run folder (images/ and results/)")
    ap.add_argument("--clip", required=True, help="a MiniCLIP folder (fgdm train clip's final/)")
    args = ap.parse_args()
    from fgdm.eval.quality import MiniCLIPFeatures
    from fgdm.models.pipeline import quiet_hf

    quiet_hf()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from category_presence import spearman

    run = Path(args.run)
    rows = [json.loads(f.read_text()) for f in sorted((run / "results").glob("p*.json"))]
    if not rows or any("present" not in r for r in rows):
        print(f"error: {args.run!r} is not a finished eval recall run (results with the judge's verdicts)", file=sys.stderr)
        return 2
    clip = MiniCLIPFeatures(args.clip, "cpu")
    feats = []
    for i in range(0, len(rows), 64):
        batch = rows[i : i + 64]
        x = torch.stack([torch.from_numpy(np.array(Image.open(run / "images" / f"p{r['prompt_index']:05d}-{r['k']:02d}.png")
                                                   .convert("RGB"))).permute(2, 0, 1) for r in batch]).float() / 255  # fmt: skip
        feats.append(clip.images(x))
    f_img = torch.nn.functional.normalize(torch.cat(feats).double(), dim=-1)
    f_txt = torch.nn.functional.normalize(clip.texts([r["prompt"] for r in rows]).double(), dim=-1)
    groups = [sum(1 for r in rows if r["prompt_index"] == p) for p in dict.fromkeys(r["prompt_index"] for r in rows)]
    own = (100 * (f_img * f_txt).sum(-1).clamp(min=0)).tolist()
    other = (100 * (f_img * next_prompt_texts(f_txt, groups)).sum(-1).clamp(min=0)).tolist()
    recalls = [object_recall(r["objects"], r["present"]) for r in rows]
    concord, pairs = pair_concordance(own, recalls, [r["prompt_index"] for r in rows])
    print(json.dumps({
        "run": str(run), "clip": args.clip, "images": len(rows),
        "clip_score": round(float(np.mean(own)), 3), "clip_score_next_prompt": round(float(np.mean(other)), 3),
        "mean_recall": round(float(np.mean(recalls)), 4),
        "spearman_score_recall": round(spearman(own, recalls), 4),
        "within_prompt_concordance": None if concord is None else round(concord, 4), "within_prompt_pairs": pairs,
    }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

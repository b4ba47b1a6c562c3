"""``fgdm eval judge``: how well the judge sees SceneWorld, on held-out renders.

Presence of a thing category = it covers >= ``PRESENCE_MIN_AREA`` of the map, for the judge's
prediction and for the ground truth alike. Reported: presence precision / recall / F1 (micro over
every image and category), per-class presence P/R, mIoU over the classes that occur, and the mean
absolute error of the predicted normalised inverse depth.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..world.categories import NUM_CLASSES, THINGS, category
from ..world.conditions import normalize_depth
from ..world.dataset import make_sample
from ..world.scene import WorldConfig
from .metrics import PRESENCE_MIN_AREA, present_categories


def evaluate_judge(judge, *, n: int = 500, seed: int = 20_000, size: int = 128, batch: int = 32,
                   config: WorldConfig | None = None, progress: bool = True) -> dict:  # fmt: skip
    tp = {c.name: 0 for c in THINGS}
    fp, fn = dict(tp), dict(tp)
    inter = np.zeros(NUM_CLASSES)
    union = np.zeros(NUM_CLASSES)
    depth_err = []
    judge = judge.eval()
    for start in tqdm(range(0, n, batch), desc="judge", disable=not progress):
        samples = [make_sample(i, seed=seed, size=size, config=config) for i in range(start, min(n, start + batch))]
        x = torch.stack([torch.from_numpy(s.render.image).permute(2, 0, 1) for s in samples]).float().div(127.5).sub(1)
        with torch.no_grad():
            logits, depth = judge(x)
        pred = logits.argmax(1).numpy().astype(np.uint8)
        for s, p, d in zip(samples, pred, depth[:, 0].numpy(), strict=True):
            truth = s.render.seg
            got, want = present_categories(p), present_categories(truth)
            for c in got & want:
                tp[c] += 1
            for c in got - want:
                fp[c] += 1
            for c in want - got:
                fn[c] += 1
            for k in np.union1d(np.unique(p), np.unique(truth)):
                a, b = p == k, truth == k
                inter[k] += (a & b).sum()
                union[k] += (a | b).sum()
            depth_err.append(float(np.abs(d - normalize_depth(s.render.depth)).mean()))
    T, P, N = sum(tp.values()), sum(fp.values()), sum(fn.values())
    prec = T / max(1, T + P)
    rec = T / max(1, T + N)
    seen = union > 0
    per_class = {c: {"precision": round(tp[c] / max(1, tp[c] + fp[c]), 3), "recall": round(tp[c] / max(1, tp[c] + fn[c]), 3),
                     "support": tp[c] + fn[c]} for c in tp}  # fmt: skip
    return {
        "presence_f1": round(2 * prec * rec / max(1e-9, prec + rec), 4),
        "presence_precision": round(prec, 4),
        "presence_recall": round(rec, 4),
        "miou": round(float((inter[seen] / union[seen]).mean()), 4),
        "miou_things": round(float(np.mean([inter[c.id] / union[c.id] for c in THINGS if union[c.id] > 0])), 4),
        "depth_mae": round(float(np.mean(depth_err)), 4),
        "n": n, "seed": seed, "size": size, "presence_min_area": PRESENCE_MIN_AREA,
        "worst_classes_by_recall": sorted(((c, v["recall"]) for c, v in per_class.items() if v["support"]), key=lambda x: x[1])[:8],
        "per_class": per_class,
        "stuff_iou": {category(i).name: round(float(inter[i] / union[i]), 3) for i in range(len(THINGS), NUM_CLASSES) if union[i] > 0},
    }  # fmt: skip

"""Deletions in FG-DM samples re-rendered with the rest kept, at several guidance scales.

    python scripts/edit_delete_guidance.py --prompts runs/captions_100_s4.json --n 20 [--guidance 1,7.5] [--graph G]

For each of the first ``--n`` prompts the graph samples seg then image (seed = prompt index), the
largest object of the sampled map is deleted (``fgdm.editing.delete``), and only the changed region
is re-rendered (``render_region``, as ``fgdm edit --delete --keep-rest``) at each ``--guidance``.
Printed, as JSON: per guidance, the means over the deletions of the judge's removal rate and
background rate over the deleted pixels and the PSNR of the image outside the changed region; then,
guidance by guidance against the first, the images better / worse and the sign test's p.
"""

import argparse
import json
from math import comb

import numpy as np

from fgdm.editing import MapSample, delete
from fgdm.editing.real import changed_region, dilate, edit_margin, extract_map, map_edit_prompt, psnr, render_region
from fgdm.eval.prompts import load_prompt_entries
from fgdm.models.judge import load_judge
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.world.categories import STUFF
from fgdm.world.conditions import resize_labels

IS_STUFF = np.zeros(256, bool)
IS_STUFF[[c.id for c in STUFF]] = True


def sign_p(better: int, worse: int) -> float:
    n, k = better + worse, min(better, worse)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--guidance", default="1,7.5", help="comma-separated guidance scales; the first is the reference")
    ap.add_argument("--graph", default=None)
    a = ap.parse_args()
    try:
        scales = [float(g) for g in a.guidance.split(",")]
        if a.n < 1 or not scales or min(scales) <= 0:
            raise ValueError(f"--n must be >= 1 and every --guidance > 0, got {a.n} and {a.guidance!r}")
        pipe = FactorGraphPipeline.from_pretrained(a.graph)
        prompts = [e.text for e in load_prompt_entries(a.prompts)[: a.n]]
    except (OSError, ValueError) as e:
        ap.error(str(e))
    judge = load_judge()
    size = pipe.spec.factors["image"].size or pipe.native_size()
    rows: dict[float, list[dict]] = {g: [] for g in scales}
    for i, prompt in enumerate(prompts):
        out = pipe(prompt, factors=["seg", "image"], seed=i)
        s = MapSample.from_labels(out.labels[0])
        objs = s.objects()
        if not objs:
            continue
        big = max(objs, key=lambda k: (objs[k][1], -k))
        cls = int(np.bincount(s.seg[s.instance == big]).argmax())
        e = delete(s, big)
        before, after = {"seg": s.seg}, {"seg": e.seg}
        keep = ~resize_labels(dilate(changed_region(before, after), edit_margin(s.seg.shape[0])).astype(np.uint8), size).astype(bool)
        gone = resize_labels((s.instance == big).astype(np.uint8), size).astype(bool)
        orig = np.asarray(out.images[0])
        seen = float((extract_map(judge, out.images[0], size)[gone] == cls).mean())
        new_prompt = map_edit_prompt(prompt, s.seg, e.seg)
        for g in scales:
            im = render_region(pipe, out.images[0], before, after, prompt, new_prompt, size=size, seed=i, guidance=g)
            j = extract_map(judge, im, size)
            rows[g].append({"removal_rate": float((j[gone] != cls).mean()), "background_rate": float(IS_STUFF[j[gone]].mean()),
                            "unchanged_psnr": psnr(np.asarray(im), orig, keep[..., None].repeat(3, 2)),
                            "seen_before": seen})  # fmt: skip
    ref = rows[scales[0]]
    summary = {str(g): {k: round(float(np.mean([r[k] for r in v])), 4) for k in v[0]} | {"edits": len(v)}
               for g, v in rows.items() if v}  # fmt: skip
    for g in scales[1:]:
        for k in ("removal_rate", "background_rate", "unchanged_psnr"):
            d = [x[k] - y[k] for x, y in zip(ref, rows[g], strict=True)]
            b, w = sum(v > 1e-9 for v in d), sum(v < -1e-9 for v in d)
            summary[f"{scales[0]} against {g}: {k}"] = {"better": b, "worse": w, "p": round(sign_p(b, w), 4)}
    print(json.dumps(summary, indent=1))

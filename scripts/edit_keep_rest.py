"""Object edits of FG-DM samples: re-rendered with the same seed, or with the rest of the image kept.

    python scripts/edit_keep_rest.py --prompts runs/captions_100_s4.json --n 16 [--graph G] [--dx 16]

For each of the first ``--n`` prompts, the graph samples seg then image (seed = prompt index), the
largest object of the sampled map is moved ``--dx`` pixels right (``fgdm.editing.move``), and the
image is re-rendered from the edited map two ways: with the same seed (``fgdm edit``) and
regenerating only where the maps changed (``fgdm edit --keep-rest``). Printed, as JSON, per way:
the PSNR of the image outside the changed region (grown by the edit margin) against the original
image, and the share of the moved object's new pixels the judge labels with its class (for the
original image: of its pixels before the move).
"""

import argparse
import json
import time

import numpy as np

from fgdm.editing import MapSample, move
from fgdm.editing.real import changed_region, dilate, edit_margin, extract_map, psnr, render_region
from fgdm.eval.prompts import load_prompt_entries
from fgdm.models.judge import load_judge
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.world.conditions import resize_labels

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--graph", default=None)
    ap.add_argument("--dx", type=int, default=16, help="move, in pixels of the sampled map")
    a = ap.parse_args()
    if a.n < 1:
        ap.error(f"--n must be >= 1, got {a.n}")
    try:  # a bad folder or prompt file is the user's input: an argument error, not a traceback
        pipe = FactorGraphPipeline.from_pretrained(a.graph)
        prompts = [e.text for e in load_prompt_entries(a.prompts)[: a.n]]
    except (OSError, ValueError) as e:
        ap.error(str(e))
    nodes = pipe.spec.factors
    if "seg" not in nodes or "image" not in nodes or "seg" not in nodes["image"].parents:
        ap.error(f"--graph {a.graph or '(the shipped graph)'!r} needs a seg factor and an image factor conditioned on it")
    judge = load_judge()
    size = pipe.spec.factors["image"].size or pipe.native_size()
    rows = {"original (object before the move)": [], "same seed": [], "keep rest": []}
    for i, prompt in enumerate(prompts):
        out = pipe(prompt, factors=["seg", "image"], seed=i)
        s = MapSample.from_labels(out.labels[0])
        objs = s.objects()
        if not objs:
            continue
        big = max(objs, key=lambda k: (objs[k][1], -k))
        try:
            e = move(s, big, a.dx, 0)
        except ValueError:  # the object would leave the frame
            continue
        before, after = {"seg": s.seg}, {"seg": e.seg}
        keep = ~resize_labels(dilate(changed_region(before, after), edit_margin(s.seg.shape[0])).astype(np.uint8), size).astype(bool)
        target = resize_labels((e.instance == big).astype(np.uint8), size).astype(bool)
        cls = int(np.bincount(s.seg[s.instance == big]).argmax())
        orig = np.asarray(out.images[0])
        was = resize_labels((s.instance == big).astype(np.uint8), size).astype(bool)
        rows["original (object before the move)"].append(
            {"moved_object_recall": float((extract_map(judge, out.images[0], size)[was] == cls).mean())})
        t0 = time.perf_counter()
        same = pipe(prompt, factors=["image"], given={"seg": e.seg}, seed=i).images[0]
        t1 = time.perf_counter()
        rest = render_region(pipe, out.images[0], before, after, prompt, size=size, seed=i)
        t2 = time.perf_counter()
        for name, im, sec in (("same seed", same, t1 - t0), ("keep rest", rest, t2 - t1)):
            judged = extract_map(judge, im, size)
            rows[name].append({"unchanged_psnr": psnr(np.asarray(im), orig, keep[..., None].repeat(3, 2)),
                               "moved_object_recall": float((judged[target] == cls).mean()) if target.any() else 0.0,
                               "seconds": sec})  # fmt: skip
    summary = {k: {m: round(float(np.mean([r[m] for r in v])), 4) for m in v[0]} | {"edits": len(v)}
               for k, v in rows.items() if v}  # fmt: skip
    print(json.dumps(summary, indent=1))

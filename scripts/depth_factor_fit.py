"""Does the depth factor draw the depth of the scene its seg map describes? Error against real depth.

For N held-out renders (world seed 50000, never trained on) the render's caption and its real seg
map go to the graph's depth factor (at the factor's size and steps, one sample each, seed i), and
the sampled depth map is scored against the render's own depth map (normalised inverse depth in
[0, 1], as the world encodes it): the mean absolute error (``mae``) and the per-map Pearson
correlation of the two (``corr``: the layout, whatever the depth scale). Rows, per guidance scale:

- ``given seg``: the real seg map given, as in ``fgdm generate --factors seg,depth,image`` once
  seg is sampled;
- ``caption only``: seg left out (the null condition), as in ``--factors depth,image``;
- ``given seg, shuffled``: the "given seg" maps scored against the *next* render's depth: the
  level a map reaches without following its own scene (chance);
- ``mean depth``: no model, every render's depth predicted by the mean of the other renders' maps.

``--eta 1`` samples with DDIM's eta = 1 (fresh noise at every step, as DDPM) instead of 0
(default: the depth factor's own ``eta`` in graph.yaml).

    python scripts/depth_factor_fit.py --graph runs/train/graph_depth_cpu --n 32 --guidance 1 2 4 [--eta 1 --steps 50]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fgdm.eval.metrics import depth_agreement
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.world.conditions import decode_depth, encode_segmentation, resize_image, resize_labels
from fgdm.world.dataset import make_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", required=True, help="a graph folder with a depth factor conditioned on seg")
    ap.add_argument("--n", type=int, default=32, help="held-out renders")
    ap.add_argument("--seed", type=int, default=50000, help="world seed of the held-out renders")
    ap.add_argument("--guidance", type=float, nargs="+", default=None, help="depth guidance scales (default: the graph's)")
    ap.add_argument("--steps", type=int, default=None, help="depth steps (default: the graph's)")
    ap.add_argument("--eta", type=float, default=None,
                    help="DDIM eta: 0 deterministic, 1 stochastic (DDPM-like); default: the graph's depth eta")
    a = ap.parse_args()
    if a.n < 2:
        ap.error(f"--n must be >= 2 (the chance rows compare renders with each other), got {a.n}")
    if a.steps is not None and a.steps < 1:
        ap.error(f"--steps must be >= 1, got {a.steps}")
    if a.eta is not None and not 0 <= a.eta <= 1:
        ap.error(f"--eta must be in [0, 1], got {a.eta}")
    try:  # a bad folder is the user's input: an argument error, not a traceback
        graph = FactorGraphPipeline.from_pretrained(a.graph)
    except ValueError as e:
        ap.error(str(e))
    spec = graph.spec.factors.get("depth")
    if spec is None or "seg" not in spec.parents:
        ap.error(f"--graph {a.graph!r} has no depth factor conditioned on seg")
    size = spec.size or graph.native_size()
    eta = spec.eta if a.eta is None else a.eta
    captions, segs, real = [], [], []
    for i in range(a.n):
        s = make_sample(i, seed=a.seed, size=max(64, size))
        captions.append(s.caption.text)
        labels = s.render.seg
        segs.append(encode_segmentation(resize_labels(labels, size) if labels.shape[0] != size else labels))
        d = s.render.conditions()["depth"]
        if d.shape[0] != size:
            d = resize_image(d, size)
        real.append(decode_depth(d))
    rows = {}
    total = np.sum(real, axis=0)
    rows["mean depth (no model)"] = depth_agreement([(total - r) / (a.n - 1) for r in real], real)
    steps = {"depth": a.steps} if a.steps else None
    for g in a.guidance or [spec.guidance]:
        for name, given in ((f"given seg, guidance {g:g}", {"seg": segs}), (f"caption only, guidance {g:g}", None)):
            t0 = time.perf_counter()
            out = graph(captions, factors=["depth"], given=given, seed=list(range(a.n)), steps=steps,
                        guidance={"depth": g}, eta=eta)  # fmt: skip
            sec = (time.perf_counter() - t0) / a.n
            pred = [decode_depth(m) for m in out.maps["depth"]]
            rows[name] = {**depth_agreement(pred, real), "seconds_per_map": round(sec, 3)}
            if given is not None:
                rows[f"given seg, guidance {g:g}, shuffled (chance)"] = depth_agreement(pred, real[1:] + real[:1])
    print(json.dumps({"graph": a.graph, "n": a.n, "world_seed": a.seed, "size": size,
                      "steps": a.steps or spec.steps, "eta": eta, "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

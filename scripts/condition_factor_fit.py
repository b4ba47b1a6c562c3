"""Does a condition factor draw the map of the scene its parents' maps describe? Agreement with the real map.

For a depth, sketch or normal factor (``--variable``, default depth) conditioned on other maps (seg
in the CPU graphs; the GPU recipe's normal factor reads depth). For N held-out renders (world seed
50000, never trained on) the render's caption and its real parent maps go to the graph's factor (at the factor's size and steps, one sample each, seed i), and the sampled
map is scored against the render's own map of that kind:

- depth (normalised inverse depth in [0, 1], as the world encodes it) and sketch (soft edges in
  [0, 1]): the mean absolute error (``mae``) and the per-map Pearson correlation of the two
  (``corr``: the layout, whatever the scale);
- normal (unit normals): the mean angle between the two, in degrees (``deg``), and the share of
  pixels within 11.25 degrees (``within_11``).

Rows, per guidance scale:

- ``given seg`` (``given <parents>``): the real parent maps given, as in ``fgdm generate --factors
  seg,depth,image`` once seg is sampled;
- ``caption only``: the parents left out (the null condition), as in ``--factors depth,image``;
- ``given seg, shuffled``: the "given seg" maps scored against the *next* render's map: the level a
  map reaches without following its own scene (chance);
- ``mean map``: no model, every render's map predicted by the mean of the other renders' maps
  (for normals, the mean normal, renormalised).

``--eta 1`` samples with DDIM's eta = 1 (fresh noise at every step, as DDPM) instead of 0
(default: the factor's own ``eta`` in graph.yaml).

    python scripts/condition_factor_fit.py --graph runs/train/graph_depth_cpu --n 32 --guidance 1 2 4 [--eta 1 --steps 50]
    python scripts/condition_factor_fit.py --graph runs/graph_conds --variable sketch --n 32
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fgdm.eval.metrics import map_agreement, normal_agreement
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.world.conditions import (
    decode_depth,
    decode_normals,
    decode_sketch,
    encode_segmentation,
    resize_image,
    resize_labels,
)
from fgdm.world.dataset import make_sample

DECODE = {"depth": decode_depth, "sketch": decode_sketch, "normal": decode_normals}


def score(variable: str, pred: list[np.ndarray], real: list[np.ndarray]) -> dict:
    return (normal_agreement if variable == "normal" else map_agreement)(pred, real)


def no_model(variable: str, mean: np.ndarray) -> np.ndarray:
    """The other renders' mean map as a map of its kind (normals renormalised to unit length)."""
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-6) if variable == "normal" else mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", required=True, help="a graph folder with the factor, conditioned on other maps")
    ap.add_argument("--variable", default="depth", choices=sorted(DECODE), help="the factor to score (default depth)")
    ap.add_argument("--n", type=int, default=32, help="held-out renders")
    ap.add_argument("--seed", type=int, default=50000, help="world seed of the held-out renders")
    ap.add_argument("--guidance", type=float, nargs="+", default=None, help="guidance scales (default: the graph's)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the graph's)")
    ap.add_argument("--eta", type=float, default=None,
                    help="DDIM eta: 0 deterministic, 1 stochastic (DDPM-like); default: the factor's eta in the graph")
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
    var = a.variable
    spec = graph.spec.factors.get(var)
    if spec is None or not spec.parents:
        ap.error(f"--graph {a.graph!r} has no {var} factor conditioned on another map")
    size = spec.size or graph.native_size()
    eta = spec.eta if a.eta is None else a.eta
    captions, parents, real = [], {p: [] for p in spec.parents}, []
    for i in range(a.n):
        s = make_sample(i, seed=a.seed, size=max(64, size))
        captions.append(s.caption.text)
        maps = s.render.conditions()
        labels = s.render.seg
        maps["seg"] = encode_segmentation(resize_labels(labels, size) if labels.shape[0] != size else labels)
        for p in (*spec.parents, var):
            if maps[p].shape[0] != size:
                maps[p] = resize_image(maps[p], size)
        for p in spec.parents:
            parents[p].append(maps[p])
        real.append(DECODE[var](maps[var]))
    given_name = "given " + " and ".join(spec.parents)
    rows = {}
    total = np.sum(real, axis=0)
    rows["mean map (no model)"] = score(var, [no_model(var, (total - r) / (a.n - 1)) for r in real], real)
    steps = {var: a.steps} if a.steps else None
    for g in a.guidance or [spec.guidance]:
        for name, given in ((f"{given_name}, guidance {g:g}", parents), (f"caption only, guidance {g:g}", None)):
            t0 = time.perf_counter()
            out = graph(captions, factors=[var], given=given, seed=list(range(a.n)), steps=steps,
                        guidance={var: g}, eta=eta)  # fmt: skip
            sec = (time.perf_counter() - t0) / a.n
            pred = [DECODE[var](m) for m in out.maps[var]]
            rows[name] = {**score(var, pred, real), "seconds_per_map": round(sec, 3)}
            if given is not None:
                rows[f"{given_name}, guidance {g:g}, shuffled (chance)"] = score(var, pred, real[1:] + real[:1])
    print(json.dumps({"graph": a.graph, "variable": var, "n": a.n, "world_seed": a.seed, "size": size,
                      "steps": a.steps or spec.steps, "eta": eta, "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

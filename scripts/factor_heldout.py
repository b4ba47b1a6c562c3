"""A graph's factor on held-out renders: denoising error against the bare base UNet and, for the
first (text-only) adapter factor, how far its attention maps are from the base's.

The trainer's own held-out metrics (``metrics.json``: ``eval_mse_*``, ``eval_attention_kl``),
measured again for any graph, so that factors trained by different runs — e.g. with and without
attention distillation (issue 5's Table 2 ablation) — are compared on the same renders, noise and
timesteps. ``eval_attention_kl`` is the distillation loss itself (KL(base || factor) of the
head-averaged self- and cross-attention maps, every layer at its own resolution) on the first
``--kl-n`` held-out latents at timesteps 100, 300, 500, 700, 900.

    python scripts/factor_heldout.py --graph runs/train/graph_abl_kd runs/train/graph_abl_nokd --factor seg
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.training.components import prerender
from fgdm.training.config import DataConfig, TrainConfig
from fgdm.training.factors import evaluate_factor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", nargs="+", required=True, help="graph folders (one row each)")
    ap.add_argument("--factor", default="seg", help="the factor to measure (default seg)")
    ap.add_argument("--n", type=int, default=256, help="held-out renders (default 256, as the trainers)")
    ap.add_argument("--seed", type=int, default=10_000, help="their world seed (default 10000, the trainers' holdout)")
    ap.add_argument("--size", type=int, default=128, help="render size (default 128)")
    ap.add_argument("--kl-n", type=int, default=16, help="latents for the attention KL (default 16; 0: skip it)")
    a = ap.parse_args()
    for name in ("n", "size"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.kl_n < 0:
        ap.error(f"--kl-n must be >= 0, got {a.kl_n}")
    try:  # a bad folder is the user's input: an argument error, not a traceback
        graphs = [FactorGraphPipeline.from_pretrained(g) for g in a.graph]
    except ValueError as e:
        ap.error(str(e))
    for g, path in zip(graphs, a.graph, strict=True):
        if a.factor not in g.spec.factors:
            ap.error(f"--graph {path!r} has no factor {a.factor!r} (it has {', '.join(g.spec.factors)})")
    prints = {g.base.fingerprint for g in graphs}
    if len(prints) > 1:
        ap.error(f"the graphs were trained on different bases ({', '.join(sorted(prints))}); compare factors on one base")
    base = graphs[0].base
    if a.size < 64 or a.size % base.size_factor:
        ap.error(f"--size must be >= 64 (the world renders from 64 px) and a multiple of {base.size_factor}, got {a.size}")
    spec = graphs[0].spec.factors[a.factor]
    needed = tuple(dict.fromkeys([*spec.parents, a.factor]))
    cfg = TrainConfig(component="factor", output_dir="-", batch_size=16, mixed_precision="bf16",
                      data=DataConfig(n_scenes=a.n, seed=a.seed, size=a.size))  # fmt: skip
    data = prerender(cfg, base.vae, lambda c: base.encode_text(c)[0], base.device, needed)
    rows = []
    for g, path in zip(graphs, a.graph, strict=True):
        t0 = time.perf_counter()
        m = evaluate_factor(g.spec.factors[a.factor], g.modules[a.factor].float(), base, data, n=a.n, kl_n=a.kl_n)
        rows.append({"graph": path, "factor": a.factor, "source": g.spec.info.get("sources", {}).get(a.factor),
                     **m, "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

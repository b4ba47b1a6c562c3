"""Training the judge (segmenter + depth estimator) on SceneWorld renders, styles included.

Settings (``extra:``): ``pool`` (scenes pre-rendered once and reused with augmentation; default
``data.n_scenes``), ``thing_weight`` (cross-entropy weight of thing classes vs stuff, 2.0),
``depth_weight`` (1.0). Augmentation per batch: horizontal flips, brightness/contrast/colour
jitter, Gaussian noise, and a random down-up resize (the blur of generated images).
"""

from __future__ import annotations

import json
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..eval.judge_eval import evaluate_judge
from ..models.judge import Judge, JudgeConfig
from ..world.categories import NUM_CLASSES, THINGS
from ..world.conditions import normalize_depth
from ..world.dataset import make_sample
from .config import TrainConfig
from .loop import train


def _render(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, seed, size, world = args
    from ..world.scene import WorldConfig

    r = make_sample(i, seed=seed, size=size, config=WorldConfig.from_dict(world) if world else None).render
    return r.image, r.seg, (normalize_depth(r.depth) * 255).astype(np.uint8)


def render_pool(n: int, seed: int, size: int, workers: int, world: dict) -> dict[str, torch.Tensor]:
    jobs = [(i, seed, size, world) for i in range(n)]
    if workers > 1:
        with Pool(workers) as pool:
            rows = pool.map(_render, jobs, chunksize=64)
    else:
        rows = [_render(j) for j in jobs]
    img, seg, dep = (np.stack(c) for c in zip(*rows, strict=True))
    return {
        "image": torch.from_numpy(img).permute(0, 3, 1, 2),
        "seg": torch.from_numpy(seg),
        "depth": torch.from_numpy(dep),
    }


def augment(x: torch.Tensor, seg: torch.Tensor, depth: torch.Tensor, gen: torch.Generator):
    """x: (B, 3, H, W) float in [-1, 1]; seg (B, H, W); depth (B, H, W) in [0, 1]."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x, seg, depth = (torch.where(flip.view(-1, *[1] * (t.dim() - 1)), t.flip(-1), t) for t in (x, seg, depth))
    gain = 1 + 0.25 * (torch.rand(b, 3, 1, 1, generator=gen) - 0.5)
    contrast = 1 + 0.4 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    x = (x * contrast * gain + 0.2 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)).clamp(-1, 1)
    blur = torch.rand(b, generator=gen) < 0.4
    if blur.any():
        f = 2 if torch.rand(1, generator=gen).item() < 0.5 else 4
        soft = F.interpolate(
            F.interpolate(x, scale_factor=1 / f, mode="bilinear", antialias=True), size=(h, w), mode="bilinear"
        )
        x = torch.where(blur.view(-1, 1, 1, 1), soft, x)
    x = x + 0.06 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1), seg, depth


def train_judge(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    arch = {"input_size": cfg.data.size, **cfg.model}
    judge = Judge(JudgeConfig(**arch))
    data = render_pool(int(cfg.extra.get("pool", cfg.data.n_scenes)), cfg.data.seed, cfg.data.size,
                       max(1, cfg.data.workers), cfg.data.world)  # fmt: skip
    weight = torch.ones(NUM_CLASSES)
    weight[: len(THINGS)] = float(cfg.extra.get("thing_weight", 2.0))
    dw = float(cfg.extra.get("depth_weight", 1.0))
    gen = torch.Generator().manual_seed(cfg.seed)

    def batches():
        while True:
            idx = torch.randint(len(data["image"]), (cfg.batch_size,), generator=gen)
            x = data["image"][idx].float().div(127.5).sub(1)
            yield augment(x, data["seg"][idx].long(), data["depth"][idx].float() / 255, gen)

    def loss_fn(model, batch, step):
        dev = next(model.parameters()).device
        x, seg, depth = (t.to(dev) for t in batch)
        logits, d = model(x)
        ce = F.cross_entropy(logits.float(), seg, weight=weight.to(dev))
        l1 = (d[:, 0].float() - depth).abs().mean()
        return ce + dw * l1, {"ce": round(float(ce.detach()), 4), "depth_l1": round(float(l1.detach()), 4)}

    res = train(cfg, judge, loss_fn, batches(), resume=resume, progress=progress)
    final = (res.ema or res.model).cpu().eval()
    out = final.save_pretrained(Path(cfg.output_dir) / "final")
    metrics = evaluate_judge(Judge.from_pretrained(out), n=cfg.data.holdout_n, seed=cfg.data.holdout_seed,
                             size=128, progress=progress)  # fmt: skip
    metrics = {**{k: v for k, v in metrics.items() if k != "per_class"}, "steps": res.step,
               "train_seconds": round(res.seconds, 1), "parameters": sum(p.numel() for p in final.parameters())}  # fmt: skip
    Path(cfg.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics

"""Training and measuring the judge (segmenter + depth estimator) on SceneWorld renders.

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
from tqdm import tqdm

from ..compliance.recall import PRESENCE_MIN_AREA, present_categories
from ..models.judge import Judge, JudgeConfig
from ..world.categories import NUM_CLASSES, THINGS, category
from ..world.conditions import normalize_depth
from ..world.dataset import make_sample
from ..world.scene import WorldConfig
from .config import TrainConfig
from .loop import train


def _render(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, seed, size, world = args
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


def evaluate_judge(judge, *, n: int = 500, seed: int = 20_000, size: int = 128, batch: int = 32,
                   config: WorldConfig | None = None, progress: bool = True) -> dict:  # fmt: skip
    """How well the judge sees SceneWorld on held-out renders (``fgdm eval judge``).

    Presence of a thing category = it covers >= ``PRESENCE_MIN_AREA`` of the map, for the judge's
    prediction and for the ground truth alike. Reported: presence precision / recall / F1 (micro over
    every image and category), per-class presence P/R, mIoU over the classes that occur, and the mean
    absolute error of the predicted normalised inverse depth.
    """
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
            logits, depth = judge(x.to(next(judge.parameters()).device))
        pred = logits.argmax(1).cpu().numpy().astype(np.uint8)
        for s, p, d in zip(samples, pred, depth[:, 0].cpu().numpy(), strict=True):
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

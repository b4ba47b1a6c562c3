"""``fgdm bench train``: seconds per training step of the UNet or the judge a config describes,
under the settings a run can choose from, measured side by side in one run on synthetic data
(random latents and text embeddings, or random images and maps: the data pipeline is not in the
timing).

UNet variants: fp32 eager, bf16 autocast eager, and (``compile=True``) bf16 with ``torch.compile``.
Judge variants: the pixel losses at every pixel vs at ``extra.loss_points`` sampled pixels per image
(2,048 if the config sets none), each in fp32 and bf16 autocast (plus compiled bf16 with
``compile=True``). Each reports milliseconds per optimizer step, samples per second and peak GPU
memory, plus its speed-up over the first variant. This is what to run first on a new machine
before a long run.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch

from ..training.components import build_unet, min_snr_mse, sd_noise_scheduler
from ..training.config import TrainConfig


def _step_fn(unet: torch.nn.Module, batch: int, latent: int, ctx_len: int, cross: int, device: str,
             autocast: bool) -> Callable[[], float]:  # fmt: skip
    g = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(batch, 4, latent, latent, generator=g, device=device)
    emb = torch.randn(batch, ctx_len, cross, generator=g, device=device)
    ac = sd_noise_scheduler().alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    dtype = torch.bfloat16

    def step() -> float:
        t = torch.randint(0, 1000, (batch,), generator=g, device=device)
        eps = torch.randn(z.shape, generator=g, device=device)
        a = ac[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z + (1 - a).sqrt() * eps
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=autocast):
            pred = unet(zt, t, encoder_hidden_states=emb).sample
            loss = min_snr_mse(pred, eps, ac[t], 5.0).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def _judge_step_fn(judge: torch.nn.Module, cfg: TrainConfig, batch: int, device: str, autocast: bool,
                   points: int) -> Callable[[], float]:  # fmt: skip
    from ..training.judge import judge_loss, loss_settings

    g = torch.Generator(device=device).manual_seed(0)
    size = cfg.data.size
    x = torch.rand(batch, 3, size, size, generator=g, device=device) * 2 - 1
    seg = torch.randint(0, judge.config.num_classes, (batch, size, size), generator=g, device=device)
    depth = torch.rand(batch, size, size, generator=g, device=device)
    has = torch.ones(batch, dtype=torch.bool, device=device)
    settings = {**loss_settings(cfg.extra), "points": points}
    opt = torch.optim.AdamW(judge.parameters(), lr=1e-4)

    def step() -> float:
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
            loss, _ = judge_loss(judge, (x, seg, depth, has), **settings, gen=g)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def bench_train(cfg: TrainConfig, *, batch: int | None = None, steps: int = 10, warmup: int = 3,
                compile: bool = False, device: str = "cpu", latent: int | None = None,
                cross_dim: int = 192, ctx_len: int = 77) -> dict:  # fmt: skip
    """Time ``steps`` training steps (after ``warmup``) of the UNet or judge in ``cfg.model`` for each
    variant."""
    if cfg.component not in ("unet", "judge"):
        raise ValueError(f"bench train measures the UNet and judge trainers; the config is for {cfg.component!r}")
    batch = batch or cfg.batch_size
    result: dict = {"component": cfg.component, "batch": batch, "steps": steps, "device": device,
                    "machine": f"{platform.machine()} {os.cpu_count()} cores"
                    + (f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""),
                    "variants": []}  # fmt: skip
    if cfg.component == "unet":
        latent = latent or cfg.data.size // 4
        result["latent"] = latent
        variants = [("fp32 eager", False, False, None), ("bf16 eager", True, False, None)]
        if compile:
            variants.append(("bf16 compiled", True, True, None))

        def build() -> torch.nn.Module:
            return build_unet(cfg.model, latent, cross_dim)

        def make_step(fwd, autocast, _points):
            return _step_fn(fwd, batch, latent, ctx_len, cross_dim, device, autocast)
    else:
        from ..models.judge import Judge, JudgeConfig
        from ..training.judge import loss_settings

        points = loss_settings(cfg.extra)["points"] or 2048
        result["size"], result["loss_points"] = cfg.data.size, points
        variants = [(f"{prec} {where}", prec == "bf16", False, n)
                    for prec in ("fp32", "bf16") for where, n in (("dense loss", 0), (f"{points} points", points))]  # fmt: skip
        if compile:
            variants.append((f"bf16 compiled {points} points", True, True, points))

        def build() -> torch.nn.Module:
            return Judge(JudgeConfig.from_dict({"input_size": cfg.data.size, **cfg.model}, "model"))

        def make_step(fwd, autocast, n_points):
            return _judge_step_fn(fwd, cfg, batch, device, autocast, n_points)
    for name, autocast, compiled, n_points in variants:
        torch.manual_seed(0)
        model = build().to(device).train()
        result["parameters"] = sum(p.numel() for p in model.parameters())
        fwd = torch.compile(model) if compiled else model
        step = make_step(fwd, autocast, n_points)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        row = {"variant": name, "ms_per_step": round(1000 * dt, 2), "samples_per_s": round(batch / dt, 1),
               "warmup_s": round(warm_s, 2)}  # fmt: skip
        if device.startswith("cuda"):
            row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["variants"].append(row)
        del model, fwd, step
    ref = result["variants"][0]["ms_per_step"]
    for row in result["variants"]:
        row["speedup"] = round(ref / row["ms_per_step"], 3)  # over the first variant
    return result

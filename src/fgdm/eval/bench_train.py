"""``fgdm bench train``: seconds per training step of the UNet a config describes, under the
settings a GPU run can choose from, measured side by side in one run on synthetic data (random
latents and text embeddings: the data pipeline is not in the timing).

Variants: fp32 eager, bf16 autocast eager, and (``compile=True``) bf16 with ``torch.compile``;
each reports milliseconds per optimizer step, samples per second and peak GPU memory, plus its
speed-up over fp32 eager. This is what to run first on a new machine before a long UNet run.
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


def bench_train(cfg: TrainConfig, *, batch: int | None = None, steps: int = 10, warmup: int = 3,
                compile: bool = False, device: str = "cpu", latent: int | None = None,
                cross_dim: int = 192, ctx_len: int = 77) -> dict:  # fmt: skip
    """Time ``steps`` training steps (after ``warmup``) of the UNet in ``cfg.model`` for each variant."""
    if cfg.component != "unet":
        raise ValueError(f"bench train measures the UNet trainer; the config is for {cfg.component!r}")
    batch = batch or cfg.batch_size
    latent = latent or cfg.data.size // 4
    variants = [("fp32 eager", False, False), ("bf16 eager", True, False)]
    if compile:
        variants.append(("bf16 compiled", True, True))
    result: dict = {"batch": batch, "latent": latent, "steps": steps, "device": device,
                    "machine": f"{platform.machine()} {os.cpu_count()} cores"
                    + (f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""),
                    "variants": []}  # fmt: skip
    for name, autocast, compiled in variants:
        torch.manual_seed(0)
        unet = build_unet(cfg.model, latent, cross_dim).to(device).train()
        result["parameters"] = sum(p.numel() for p in unet.parameters())
        fwd = torch.compile(unet) if compiled else unet
        step = _step_fn(fwd, batch, latent, ctx_len, cross_dim, device, autocast)
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
        del unet, fwd, step
    ref = result["variants"][0]["ms_per_step"]
    for row in result["variants"]:
        row["speedup_vs_fp32"] = round(ref / row["ms_per_step"], 3)
    return result

"""``fgdm bench encode``: VAE encoding of SceneWorld renders (the pre-encode step of every UNet and
factor run) in fp32 and under bf16 autocast, side by side, with how far the bf16 latents are off."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from ..world.dataset import SceneWorldDataset, collate
from .timing import sync


def bench_encode(vae_dir: str | Path | None, *, size: int = 128, batch: int = 32, n: int = 3,
                 device: str = "cpu") -> dict:  # fmt: skip
    """Milliseconds per scene of ``vae.encode`` (the posterior mean) on ``n`` batches of ``batch``
    renders, fp32 and bf16 alternating batch by batch so that both see the same machine state, and
    the relative L2 error of the bf16 latents against fp32's (a MiniVAE folder or an SD pipeline
    folder's ``vae/``; default: the shipped MiniSD's)."""
    from ..models.pipeline import check_model_dir, default_model_dir
    from ..training.components import load_vae

    if vae_dir is None:
        vae_dir = check_model_dir(default_model_dir())
    vae = load_vae(vae_dir, "vae").to(device).eval()
    vae = vae if vae.dtype == torch.float32 else vae.float()  # a shipped fp16 VAE is timed in fp32 too
    ds = SceneWorldDataset(batch * (n + 1), size=size, seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, collate_fn=collate)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    errs = []
    dev_type = torch.device(device).type
    with torch.no_grad():
        for i, b in enumerate(loader):
            x = b["image"].to(device)
            out = {}
            for name in times:
                sync()
                t0 = time.perf_counter()
                with torch.autocast(dev_type, torch.bfloat16, enabled=name == "bf16"):
                    out[name] = vae.encode(x).latent_dist.mean.float()
                sync()
                if i:  # the first batch warms both up
                    times[name].append(time.perf_counter() - t0)
            if i:
                errs.append(float((out["bf16"] - out["fp32"]).norm() / out["fp32"].norm()))
    ms = {k: 1000 * sum(v) / (len(v) * batch) for k, v in times.items()}
    return {
        "vae": str(vae_dir), "size": size, "batch": batch, "batches": n, "device": device,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if dev_type == "cuda" else f", {platform.processor() or 'cpu'}"),
        "ms_per_scene_fp32": round(ms["fp32"], 2), "ms_per_scene_bf16": round(ms["bf16"], 2),
        "bf16_speedup": round(ms["fp32"] / ms["bf16"], 2),
        "bf16_latent_rel_error": round(max(errs), 5),
    }  # fmt: skip

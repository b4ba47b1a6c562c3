"""``fgdm bench factors``: what FG-DM's parts cost, measured side by side in one run.

- training: seconds per optimizer step of a seg adapter without and with attention distillation
  (on a sub-batch, as in training), and the amortised ratio at the configured frequency;
- sampling: a seg -> image graph, joint vs ancestral (same number of factor evaluations; the
  ratio shows the scheduling overhead), with the image factor as a ControlNet and as an adapter,
  and per sample when ``sample_batch`` prompts share one call (what the exports' and the
  evaluation runners' ``--batch-size`` buys);
- size: parameters and fp16 megabytes of each factor kind on this base.

Weights are random (speed depends on the architecture, not the weights).
"""

from __future__ import annotations

import os
import platform
import time

import torch

from ..attention import LayerSelector
from ..models.factors import GraphSpec, build_factor_module, factor_forward
from ..models.pipeline import load_base_model
from ..pipelines.factor_graph import FactorGraphPipeline
from ..training.factors import distillation_loss

PROMPTS = ["a dog and a cat on the grass", "a bus, a car and a person on the road", "a pizza on a dining table",
           "a boat on the water under the sky"]  # fmt: skip


def _timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p) * 0.02)


def bench_factors(model: str | None, *, batch: int = 16, distill_batch: int = 8, distill_every: int = 10,
                  steps: int = 25, n: int = 3, sample_batch: int = 16, device: str = "cpu") -> dict:  # fmt: skip
    if not isinstance(sample_batch, int) or sample_batch < 1:
        raise ValueError(f"sample_batch must be a positive integer, got {sample_batch!r}")
    base = load_base_model(model, device=device)
    unet = base.unet
    size = unet.config.sample_size * base.vae_scale_factor
    lat = unet.config.sample_size
    specs = GraphSpec.from_dict({"factors": {"seg": {}, "image": {"kind": "controlnet", "parents": ["seg"]}}}).factors
    result: dict = {"model": str(base.path), "fingerprint": base.fingerprint, "size": size, "device": device,
                    "threads": torch.get_num_threads(),
                    "machine": f"{platform.machine()} {os.cpu_count()} cores"
                    + (f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else "")}  # fmt: skip

    # 1. training step of the seg adapter, without and with distillation (alternating)
    spec = specs["seg"]
    adapter = build_factor_module(spec, unet).to(device)
    _perturb(adapter, 0)
    opt = torch.optim.AdamW(adapter.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, 4, lat, lat, generator=g).to(device)
    emb = base.encode_text([PROMPTS[i % len(PROMPTS)] for i in range(batch)])[0]
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    k = min(distill_batch, batch)
    select = LayerSelector()

    def step(distill: bool) -> None:
        loss = ((factor_forward(spec, adapter, unet, z, t, emb, None) - z) ** 2).mean()
        if distill:
            loss = loss + 0.1 * distillation_loss(spec, adapter, unet, z[:k], t[:k], emb[:k], select)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(True)
    step(False)  # warm-up
    plain, dist = [], []
    for _ in range(n):
        plain.append(_timed(lambda: step(False), device))
        dist.append(_timed(lambda: step(True), device))
    p, d = sum(plain) / n, sum(dist) / n
    result["train_step"] = {
        "batch": batch, "distill_batch": k, "seconds_per_step": round(p, 4),
        "seconds_per_step_with_distillation": round(d, 4), "distillation_step_ratio": round(d / p, 3),
        "distill_every": distill_every, "amortised_ratio": round(1 + (d / p - 1) / distill_every, 3),
    }  # fmt: skip

    # 2. sampling seg -> image, joint vs ancestral, ControlNet vs adapter image factor
    result["sampling"] = {}
    for kind in ("controlnet", "adapter"):
        graph = {"factors": {"seg": {"steps": steps}, "image": {"kind": kind, "parents": ["seg"], "steps": steps}}}
        pipe = FactorGraphPipeline.new(base, graph)
        for i, m in enumerate(pipe.modules.values()):
            _perturb(m, i + 1)
        pipe("a dog", steps={"seg": 2, "image": 2})  # warm-up
        times: dict[str, list[float]] = {"joint": [], "ancestral": [], "batch": []}
        b = sample_batch
        for i in range(n):
            for mode in ("joint", "ancestral"):
                times[mode].append(_timed(lambda p=pipe, m=mode, i=i: p(PROMPTS[i % len(PROMPTS)], mode=m, seed=i), device))
            batch = [PROMPTS[(i + k) % len(PROMPTS)] for k in range(b)]
            seeds = [i + 100 * k for k in range(b)]
            times["batch"].append(_timed(lambda p=pipe, x=batch, s=seeds: p(x, seed=s), device) / b)
        j, a, jb = (sum(times[k]) / n for k in ("joint", "ancestral", "batch"))
        img = pipe.modules["image"]
        params = sum(p.numel() for p in img.parameters())
        result["sampling"][kind] = {
            "seconds_per_sample_joint": round(j, 4), "seconds_per_sample_ancestral": round(a, 4),
            "joint_over_ancestral": round(j / a, 3), "sample_batch": b,
            "seconds_per_sample_joint_batched": round(jb, 4), "batch_speedup": round(j / jb, 3),
            "image_factor_parameters": params,
            "image_factor_fp16_mb": round(params * 2 / 2**20, 2),
        }  # fmt: skip
    seg_params = sum(p.numel() for p in adapter.parameters())
    result["seg_adapter_parameters"] = seg_params
    result["seg_adapter_fp16_mb"] = round(seg_params * 2 / 2**20, 2)
    result["steps"] = steps
    return result

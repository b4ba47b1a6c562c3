"""``fgdm bench generate``: seconds per image, the overhead of attention capture, and the gain of
batching images (the evaluation runners' ``--batch-size``), in one run."""

from __future__ import annotations

import os
import platform
import time

import torch

from ..attention import LayerSelector
from ..pipelines.text2image import Text2ImagePipeline

PROMPT = "a photo of a dog and a cat on the grass"


def bench_generate(model: str | None, *, size: int | None = None, steps: int = 25, n: int = 3,
                   device: str = "cpu", batches: list[int] | None = None) -> dict:  # fmt: skip
    """Average seconds per image (batch 1, CFG) without and with capture of every cross-attention
    layer, and per image at each batch size in ``batches`` (one batch of that many images of one
    prompt), alternating all of them so that each sees the same machine state."""
    if any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in batches or []):
        raise ValueError(f"batches must be positive integers, got {batches}")
    batches = sorted(set(batches or []) - {1})
    pipe = Text2ImagePipeline.from_pretrained(model, device=device)
    size = size or pipe.model.unet.config.sample_size * pipe.model.vae_scale_factor
    pipe([PROMPT] * max([1, *batches]), num_inference_steps=2, size=size)  # warm-up, at the largest batch
    plain, capture = [], []
    batched: dict[int, list[float]] = {b: [] for b in batches}
    runs = [(plain, 1, None), (capture, 1, LayerSelector(kinds=("cross",)))]
    runs += [(batched[b], b, None) for b in batches]
    for i in range(n):
        for store, b, sel in runs:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pipe([PROMPT] * b, num_inference_steps=steps, size=size, seed=i, attention=sel)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            store.append((time.perf_counter() - t0) / b)
    p, c = sum(plain) / n, sum(capture) / n
    mean = {b: sum(v) / n for b, v in batched.items()}
    extra = {}
    if batches:  # the ratio is batch 1's time per image over batch b's: > 1 when batching pays
        extra = {"seconds_per_image_by_batch": {"1": round(p, 4), **{str(b): round(t, 4) for b, t in mean.items()}},
                 "batch_speedup": {str(b): round(p / t, 3) for b, t in mean.items()}}  # fmt: skip
    return {
        "model": str(pipe.model.path), "fingerprint": pipe.model.fingerprint, "size": size, "steps": steps,
        "device": device, "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores" + (f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""),
        "seconds_per_image": round(p, 4), "seconds_per_image_with_cross_attention_capture": round(c, 4),
        "capture_overhead_ratio": round(c / p, 3), **extra,
    }  # fmt: skip

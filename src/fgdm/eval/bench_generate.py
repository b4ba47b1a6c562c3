"""``fgdm bench generate``: seconds per image, and the overhead of attention capture, in one run."""

from __future__ import annotations

import os
import platform
import time

import torch

from ..attention import LayerSelector
from ..pipelines.text2image import Text2ImagePipeline

PROMPT = "a photo of a dog and a cat on the grass"


def bench_generate(model: str | None, *, size: int | None = None, steps: int = 25, n: int = 3,
                   device: str = "cpu") -> dict:  # fmt: skip
    """Average seconds per image (batch 1, CFG) without and with capture of every cross-attention
    layer, alternating the two so that both see the same machine state."""
    pipe = Text2ImagePipeline.from_pretrained(model, device=device)
    size = size or pipe.model.unet.config.sample_size * pipe.model.vae_scale_factor
    pipe(PROMPT, num_inference_steps=2, size=size)  # warm-up
    plain, capture = [], []
    for i in range(n):
        for store, sel in ((plain, None), (capture, LayerSelector(kinds=("cross",)))):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pipe(PROMPT, num_inference_steps=steps, size=size, seed=i, attention=sel)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            store.append(time.perf_counter() - t0)
    p, c = sum(plain) / n, sum(capture) / n
    return {
        "model": str(pipe.model.path), "fingerprint": pipe.model.fingerprint, "size": size, "steps": steps,
        "device": device, "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores" + (f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""),
        "seconds_per_image": round(p, 4), "seconds_per_image_with_cross_attention_capture": round(c, 4),
        "capture_overhead_ratio": round(c / p, 3),
    }  # fmt: skip

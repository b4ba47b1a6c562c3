"""Samples side by side: the same prompts and seeds through several base models (or through one
UNet at several points of its training), as one contact sheet — what people look at first when a
model changes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..models.pipeline import check_model_dir, default_model_dir
from ..pipelines.text2image import Text2ImagePipeline
from ..world.sheet import contact_sheet


@dataclass
class SamplesResult:
    images: list[list[list[Image.Image]]]  # [model][prompt][k]: image k of a prompt uses seed + k
    labels: list[str]
    headers: list[str] = field(default_factory=list)  # one per column: "label sSEED"
    models: list[dict] = field(default_factory=list)  # label, path, fingerprint, seconds per model
    size: int = 0

    def sheet(self, prompts: list[str], cell: int = 128) -> Image.Image:
        """One row per prompt (captioned), one column per model and seed (headed ``label sSEED``)."""
        rows = [[np.asarray(img.convert("RGB")) for per_model in self.images for img in per_model[p]]
                for p in range(len(prompts))]  # fmt: skip
        return contact_sheet(rows, headers=self.headers, captions=prompts, cell=cell)


def sample_models(models: list[str | Path | None], prompts: list[str], *, labels: list[str] | None = None,
                  seed: int = 0, n: int = 2, steps: int = 25, guidance_scale: float = 7.5, size: int | None = None,
                  device: str = "cpu", progress: bool = True) -> SamplesResult:  # fmt: skip
    """Generate ``n`` images per prompt with each model (``None``: the shipped MiniSD).

    Image ``k`` of a prompt uses seed ``seed + k`` — exactly the image of ``fgdm generate PROMPT
    --seed SEED --n N`` — so every column compares the models on the same initial noise. Models are
    loaded one at a time. ``size`` defaults to the first model's native size.
    """
    if not models:
        raise ValueError("models is empty: give at least one model")
    if labels is not None and len(labels) != len(models):
        raise ValueError(f"labels: {len(labels)} given for {len(models)} models")
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty prompts")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    for m in models:  # every folder checked before any image is drawn: a bad last one wastes no work
        check_model_dir(default_model_dir() if m is None else m)
    labels = list(labels) if labels is not None else [_label(m) for m in models]
    res = SamplesResult(images=[], labels=labels)
    bar = tqdm(total=len(models) * len(prompts), desc="samples", unit="prompt", disable=not progress)
    for m, label in zip(models, labels, strict=True):
        pipe = Text2ImagePipeline.from_pretrained(m, device=device)
        if size is None:
            size = pipe.model.unet.config.sample_size * pipe.model.vae_scale_factor
        t0 = time.perf_counter()
        per_prompt = []
        for p in prompts:
            out = pipe(p, num_images_per_prompt=n, num_inference_steps=steps, guidance_scale=guidance_scale,
                       size=size, seed=seed)  # fmt: skip
            per_prompt.append(out.images)
            bar.update()
        res.images.append(per_prompt)
        res.models.append({"label": label, "path": str(pipe.model.path), "fingerprint": pipe.model.fingerprint,
                           "seconds": round(time.perf_counter() - t0, 3)})  # fmt: skip
        del pipe
    bar.close()
    res.size = int(size)
    res.headers = [f"{label} s{seed + k}" for label in labels for k in range(n)]
    return res


def _label(model: str | Path | None) -> str:
    if model is None:
        return "MiniSD"
    p = Path(model)
    return p.name if p.name not in ("", ".", "final", "unet") else p.resolve().parent.name

"""``fgdm eval quality``: image quality and alignment in MiniCLIP's feature space.

Generated images (K per prompt) are compared with real SceneWorld renders (held-out seeds):
Fréchet distance (torchmetrics FID with MiniCLIP's image tower as the extractor), precision and
recall (Kynkäänniemi et al.), CLIP score of each image with its prompt, and diversity between
the images of one prompt.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..world.dataset import make_sample
from .features import clip_score, diversity, frechet_distance, precision_recall


class MiniCLIPFeatures:
    """Image and text features of a ``transformers.CLIPModel`` folder (MiniCLIP or any CLIP)."""

    def __init__(self, path: str | Path | None = None, device: str = "cpu", text_encoder: str | Path | None = None) -> None:
        """``path``: a CLIPModel folder, or the evaluation MiniCLIP (default: the shipped one, whose
        text tower comes from ``text_encoder``, default the shipped MiniSD)."""
        from ..models.miniclip import load_eval_clip

        self.model, self.tokenizer = load_eval_clip(path, text_encoder=text_encoder, device=device)
        self.size = self.model.config.vision_config.image_size
        self.device = device

    @torch.no_grad()
    def images(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, D) projected image features."""
        x = x.float().to(self.device) * 2 - 1
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.model.visual_projection(self.model.vision_model(pixel_values=x).pooler_output).float()

    @torch.no_grad()
    def texts(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        return self.model.text_projection(self.model.text_model(input_ids=ids.to(self.device)).pooler_output).float()


def _to_tensor(images) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1) for im in images]).float() / 255


def evaluate_quality(pipe, clip: MiniCLIPFeatures, prompts: list[str], *, images_per_prompt: int = 4, steps: int = 25,
                     guidance_scale: float = 7.5, seed: int = 0, size: int | None = None, n_real: int = 500,
                     real_seed: int = 40_000, batch_size: int = 16, progress: bool = True) -> dict:  # fmt: skip
    """Image k of prompt p uses seed ``seed + 1000 p + k``; images are drawn ``batch_size`` at a
    time across prompts (speed only: each keeps its seed)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    work = [(p, k) for p in range(len(prompts)) for k in range(images_per_prompt)]
    gen, groups = [], [images_per_prompt] * len(prompts)
    bar = tqdm(total=len(work), desc="generate", unit="image", disable=not progress)
    for b in range(0, len(work), batch_size):
        batch = work[b : b + batch_size]
        res = pipe([prompts[p] for p, _ in batch], num_inference_steps=steps, guidance_scale=guidance_scale,
                   seed=[seed + 1000 * p + k for p, k in batch], size=size)  # fmt: skip
        gen.append(_to_tensor(res.images))
        bar.update(len(batch))
    bar.close()
    fake = torch.cat(gen)
    side = fake.shape[-1]
    real_size = max(64, min(512, side - side % 8))
    real = torch.stack([
        torch.from_numpy(make_sample(i, seed=real_seed, size=real_size).render.image).permute(2, 0, 1)
        for i in tqdm(range(n_real), desc="real renders", disable=not progress)
    ]).float() / 255  # fmt: skip
    f_fake = torch.cat([clip.images(fake[i : i + 64]) for i in range(0, len(fake), 64)])
    f_real = torch.cat([clip.images(real[i : i + 64]) for i in range(0, len(real), 64)])
    f_text = clip.texts([t for t, k in zip(prompts, groups, strict=True) for _ in range(k)])
    starts = np.cumsum([0, *groups])
    div = [diversity(f_fake[a:b]) for a, b in pairwise(starts) if b - a >= 2]
    return {
        "frechet_distance": round(frechet_distance(real, fake, clip.images), 4),
        **{k: round(v, 4) for k, v in precision_recall(f_real, f_fake).items()},
        "clip_score": round(clip_score(f_fake, f_text), 3),
        "diversity": round(float(np.mean(div)), 4) if div else None,
        "n_generated": len(fake), "n_real": len(real),
    }  # fmt: skip

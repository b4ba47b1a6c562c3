"""``fgdm eval quality``: image quality and alignment in MiniCLIP's feature space.

Generated images (K per prompt) are compared with real SceneWorld renders (held-out seeds):
Fréchet distance (torchmetrics FID with MiniCLIP's image tower as the extractor), precision and
recall (Kynkäänniemi et al.), CLIP score of each image with its prompt, and diversity between
the images of one prompt.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .features import clip_score, diversity, frechet_distance, next_prompt_texts, precision_recall
from .prompts import REFERENCE_NEEDS_OBJECTS, PromptEntry, prompt_entries


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


def evaluate_quality(pipe, clip: MiniCLIPFeatures, prompts: list[str] | list[PromptEntry], *,
                     out: str | Path | None = None, images_per_prompt: int = 4, steps: int = 25,
                     guidance_scale: float = 7.5, seed: int = 0, size: int | None = None, n_real: int = 500,
                     real_seed: int = 40_000, reference: str = "prompts", batch_size: int = 16,
                     progress: bool = True) -> dict:  # fmt: skip
    """Fréchet distance, precision/recall, CLIP score and diversity of the images of ``prompts``.

    Image k of prompt p uses seed ``seed + 1000 p + k``. They are drawn by the benchmark runner
    (:func:`~fgdm.eval.runner.run_prompts`: ``batch_size`` at a time across prompts, split across
    ``accelerate`` processes) into ``out/images`` — a resumed run does not draw them again — or,
    without ``out``, into a temporary folder.

    ``reference``: the ``n_real`` real images the generated ones are compared with. "prompts"
    (default): renders of the same prompts, prompt ``i % P`` with seed ``real_seed + i``, each
    showing exactly what its prompt names (:class:`~fgdm.eval.runner.WorldRenders`, scene seeds
    apart from ``--real``'s), as FID on COCO compares with the captions' own photos. "world":
    held-out renders of the world at large (``make_sample(i, seed=real_seed)``), whatever their
    content and style.
    """
    from .runner import real_reference, run_prompts

    if reference not in ("prompts", "world"):
        raise ValueError(f"reference must be 'prompts' or 'world', got {reference!r}")
    entries = prompt_entries(prompts, need_objects=REFERENCE_NEEDS_OBJECTS if reference == "prompts" else None)
    with nullcontext(out) if out is not None else tempfile.TemporaryDirectory() as d:
        rows = run_prompts(entries, Path(d), pipe=pipe, judge=None, images_per_prompt=images_per_prompt, steps=steps,
                           guidance_scale=guidance_scale, seed=seed, size=size, batch_size=batch_size,
                           progress=progress)  # fmt: skip
        images = []
        for r in rows:
            with Image.open(Path(d) / "images" / f"p{r['prompt_index']:05d}-{r['k']:02d}.png") as im:
                images.append(im.convert("RGB"))
    fake = _to_tensor(images)
    groups = [images_per_prompt] * len(entries)
    side = fake.shape[-1]
    real_size = max(64, min(512, side - side % 8))
    ref = real_reference(n_real, real_size, [], real_seed, entries if reference == "prompts" else None, progress)
    real = torch.from_numpy(np.stack(ref["image"])).permute(0, 3, 1, 2).float() / 255
    f_fake = torch.cat([clip.images(fake[i : i + 64]) for i in range(0, len(fake), 64)])
    f_real = torch.cat([clip.images(real[i : i + 64]) for i in range(0, len(real), 64)])
    f_text = clip.texts([e.text for e, k in zip(entries, groups, strict=True) for _ in range(k)])
    starts = np.cumsum([0, *groups])
    div = [diversity(f_fake[a:b]) for a, b in pairwise(starts) if b - a >= 2]
    return {
        "frechet_distance": round(frechet_distance(real, fake, clip.images), 4),
        **{k: round(v, 4) for k, v in precision_recall(f_real, f_fake).items()},
        "clip_score": round(clip_score(f_fake, f_text), 3),
        "clip_score_shuffled": round(clip_score(f_fake, next_prompt_texts(f_text, groups)), 3) if len(groups) > 1 else None,
        "diversity": round(float(np.mean(div)), 4) if div else None,
        "n_generated": len(fake), "n_real": len(real), "reference": reference,
    }  # fmt: skip

"""Plain text-to-image generation with a base model (MiniSD or any SD directory), DDIM + CFG."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..attention import AttentionStore, LayerSelector, attention_control
from ..models.pipeline import BaseModel, load_base_model
from ..sampling import cfg_denoiser, ddim_schedule, sample_ddim, to_epsilon


@dataclass
class Text2ImageOutput:
    images: list[Image.Image]
    latents: torch.Tensor  # (N, 4, h, w) final latents
    seeds: list[int]  # the seed of each image's initial noise
    tokens: list[list[str]]  # the tokens of each image's prompt
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    attention: AttentionStore | None = None  # running-mean maps, when attention capture was asked for


def image_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """The initial-noise seed of each of ``n`` images: ``seed + i``, or the given list."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(n)]
    if isinstance(seed, (str, bytes, bool)) or not isinstance(seed, Sequence):
        raise ValueError(f"seed must be an int or a list of ints, got {seed!r}")
    seeds = list(seed)
    if len(seeds) != n or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seed: a list needs one int per image ({n}), got {seeds!r}")
    return [int(s) for s in seeds]


def latents_to_images(vae: torch.nn.Module, latents: torch.Tensor) -> list[Image.Image]:
    x = vae.decode(latents / vae.config.scaling_factor).sample
    arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


class Text2ImagePipeline:
    """``Text2ImagePipeline.from_pretrained(dir)(prompt, seed=0)`` -> :class:`Text2ImageOutput`."""

    def __init__(self, model: BaseModel) -> None:
        self.model = model

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, device: str = "cpu",
                        dtype: torch.dtype = torch.float32) -> Text2ImagePipeline:  # fmt: skip
        return cls(load_base_model(path, device=device, dtype=dtype))

    def check_inputs(self, prompts: list[str], size: int, steps: int, guidance_scale: float, n: int) -> None:
        f = self.model.size_factor
        if not isinstance(size, int) or size < f or size % f:
            raise ValueError(f"size must be a positive multiple of {f} (this model's factor), got {size!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not guidance_scale >= 0.0:  # also refuses NaN
            raise ValueError(f"guidance_scale must be >= 0 (1: no guidance, 0: unconditional), got {guidance_scale}")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {n!r}")
        if not prompts:
            raise ValueError("prompt is empty: give at least one prompt")

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], *, num_images_per_prompt: int = 1, num_inference_steps: int = 25,
                 guidance_scale: float = 7.5, size: int | None = None, seed: int | Sequence[int] = 0,
                 eta: float = 0.0, negative_prompt: str = "", attention: LayerSelector | None = None,
                 progress: bool = False) -> Text2ImageOutput:  # fmt: skip
        """Images for ``prompt`` (one string or a list), ``num_images_per_prompt`` each.

        ``seed``: an int gives image i the initial noise of ``seed + i``; a list gives every image
        its own seed (one per image, prompt-major), so that images of different prompts can share a
        batch and each still equals the image drawn alone with its seed (up to float rounding). That
        holds for DDIM's default ``eta=0``; with ``eta > 0`` the per-step noise of the whole batch
        comes from the first image's seed.
        """
        m = self.model
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        size = size or m.unet.config.sample_size * m.vae_scale_factor
        # 1. check inputs
        self.check_inputs(prompts, size, num_inference_steps, guidance_scale, num_images_per_prompt)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        # 2. encode the prompt(s), one row per image
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        cond, tokens = m.encode_text_rows(prompts)
        uncond = m.encode_text_rows([negative_prompt] * len(prompts), allow_empty=True)[0] if guidance_scale != 1 else None
        timings["encode_s"] = time.perf_counter() - t0
        # 3. initial noise: image i uses seeds[i] (seed + i, or the list), so each is reproducible on its own
        lat = size // m.vae_scale_factor
        seeds = image_seeds(seed, len(prompts))
        x = torch.stack([torch.randn(4, lat, lat, generator=torch.Generator().manual_seed(s)) for s in seeds])
        x = x.to(m.device, m.unet.dtype)
        # 4. denoise
        t1 = time.perf_counter()
        schedule = ddim_schedule(m.scheduler.config, num_inference_steps)
        pred = m.scheduler.config.get("prediction_type", "epsilon")

        def unet_eps(xb: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            out = m.unet(xb, t, encoder_hidden_states=ctx).sample
            a_t = schedule.alphas_cumprod[t.cpu()].to(xb).view(-1, 1, 1, 1)
            return to_epsilon(out, xb, a_t, pred)

        store = AttentionStore(mode="mean") if attention is not None else None
        ctrl = attention_control(m.unet, attention, store) if attention is not None else nullcontext()
        bar = tqdm(total=num_inference_steps, desc="denoise", disable=not progress)
        gen = torch.Generator().manual_seed(seeds[0] + 10_000)
        with ctrl:
            x = sample_ddim(cfg_denoiser(unet_eps, cond, uncond, guidance_scale), x, schedule, eta=eta, generator=gen,
                            callback=lambda *_: bar.update())  # fmt: skip
        bar.close()
        timings["denoise_s"] = time.perf_counter() - t1
        # 5. decode
        t2 = time.perf_counter()
        images = latents_to_images(m.vae, x)
        timings["decode_s"] = time.perf_counter() - t2
        timings["total_s"] = time.perf_counter() - t0
        return Text2ImageOutput(images, x, seeds, tokens, timings, store)


def attention_grid(image: Image.Image, maps: torch.Tensor, tokens: list[str], cell: int = 96) -> Image.Image:
    """Per-token cross-attention heat maps over the image: one tile per real token (no padding).

    ``maps`` is (size, size, K) for one image (e.g. ``store.aggregate(...)[i]``).
    """
    from PIL import ImageDraw, ImageFont

    end = tokens.index(tokens[-1]) if tokens else 0  # first end-of-text (padding repeats it)
    keep = [(j, t) for j, t in enumerate(tokens[: end + 1])]
    font = ImageFont.load_default(size=12)
    base = np.asarray(image.convert("RGB").resize((cell, cell)), dtype=np.float32)
    tiles = [Image.fromarray(base.astype(np.uint8))]
    labels = ["image"]
    for j, t in keep:
        h = maps[..., j].float()
        h = (h - h.min()) / (h.max() - h.min() + 1e-8)
        h = torch.nn.functional.interpolate(h[None, None], size=(cell, cell), mode="bilinear")[0, 0].numpy()
        heat = np.stack([h * 255, h * 80, (1 - h) * 60], -1)
        tiles.append(Image.fromarray((0.45 * base + 0.55 * heat).clip(0, 255).astype(np.uint8)))
        labels.append(t.replace("</w>", ""))
    cols = min(8, len(tiles))
    rows = -(-len(tiles) // cols)
    grid = Image.new("RGB", (cols * cell, rows * (cell + 16)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (tile, lab) in enumerate(zip(tiles, labels, strict=True)):
        x, y = (i % cols) * cell, (i // cols) * (cell + 16)
        grid.paste(tile, (x, y + 16))
        draw.text((x + 3, y + 2), lab[:14], fill=(0, 0, 0), font=font)
    return grid

"""Tiny random-weight Stable Diffusion pipelines, built offline from configs (tests, demos, CI).

The structure is SD's (CLIP text encoder and tokenizer, KL autoencoder, cross-attention UNet with
down/mid/up attention, DDIM scheduler); only the sizes are tiny.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .tokenizer import save_bpe, train_bpe


def _captions(n: int) -> list[str]:
    from ..world.captions import make_caption
    from ..world.scene import sample_scene

    return [make_caption(sample_scene(i), np.random.default_rng(i)).text for i in range(n)]


def build_tiny_pipeline(out_dir: str | Path, *, latent_size: int = 8, vae_factor: int = 4, seed: int = 0,
                        sd_layout: bool = False, prediction_type: str = "epsilon"):  # fmt: skip
    """Build and save a tiny random SD pipeline at ``out_dir``; returns the pipeline object.

    Images are ``latent_size * vae_factor`` pixels square (default 32). ``sd_layout`` gives the
    UNet Stable Diffusion's four levels (cross-attention in the first three down blocks and the
    last three up blocks) instead of two; with ``vae_factor=8`` and ``prediction_type="v_prediction"``
    the pipeline has the shape of SD 2.x at 768 px, in miniature.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    torch.manual_seed(seed)
    vocab, merges = train_bpe(_captions(200), vocab_size=1024)
    tok_dir = save_bpe(vocab, merges, out / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))  # fmt: skip
    levels = int(np.log2(vae_factor)) + 1
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,) * levels, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1, sample_size=latent_size * vae_factor,
    )  # fmt: skip
    unet_levels = 4 if sd_layout else 2
    unet = UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 16, 32, 32) if sd_layout else (16, 32),
        down_block_types=("CrossAttnDownBlock2D",) * (unet_levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (unet_levels - 1),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8, use_linear_projection=sd_layout,  # SD 2.x's
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1, prediction_type=prediction_type,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(out, safe_serialization=True)
    save_bpe(vocab, merges, out / "tokenizer", configs=False)  # also the classic CLIP files
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    return pipe

"""The MiniSD components' trainers: tokenizer, MiniCLIP, MiniVAE, UNet; and the pipeline assembly.

Component-specific settings (``extra:`` in the YAML):
- tokenizer: ``vocab_size`` (model) — trained on captions of the training scenes.
- vae: ``kl_weight`` (default 1e-6); trains on images and on every condition map (one modality
  drawn per sample), as FG-DM encodes every condition with the same VAE. ``pool``: scenes
  pre-rendered once (all five modalities) and drawn from memory (default ``data.n_scenes``).
  ``modality_probs`` (e.g. ``{image: 1, seg: 3}``): relative odds of drawing each modality
  (unlisted: 0; default: all equal). ``base.vae`` starts from a trained VAE; with it,
  ``freeze_encoder: true`` trains only the decoder (SD's ft-MSE recipe): the encoder, its latents
  and the latent scaling factor stay exactly those of ``base.vae``, so a UNet trained on them
  stays valid with the new decoder.
- clip: ``pool`` as for the VAE (images and captions); the image tower sees ``data.size`` images
  in [-1, 1]. ``base.clip`` starts from a trained MiniCLIP; with it, ``freeze_text: true`` trains
  only the image tower against the fixed text tower (locked-text tuning, LiT): the text tower, which
  is MiniSD's text encoder, stays bit for bit that of ``base.clip``, so nothing trained on its
  states changes.
- unet: ``caption_dropout`` (0.1, for classifier-free guidance), ``min_snr_gamma`` (5.0; None =
  plain MSE), ``prerender`` (true: render, VAE-encode and text-encode all training scenes once,
  then train from memory). ``base.unet`` starts from a trained UNet (a pipeline folder works for
  every ``base`` part: ``base: {tokenizer: D, text_encoder: D, vae: D, unet: D}`` with D = MiniSD).
  ``train_text_encoder`` (false): the text encoder trains jointly with the UNet (one model to the
  loop, its EMA and checkpoints; captions are pre-tokenized instead of pre-encoded, and a dropped
  caption is the empty caption through the training encoder). SD freezes its text encoder, and so
  does MiniSD's recipe; this is for experiments and for fine-tunes that need it. The run writes
  ``final/`` (the UNet) and ``final-text-encoder/`` (a ``CLIPTextModel``), to assemble with
  ``--unet`` and ``--text-encoder``. ``freeze_unet`` (false; with ``train_text_encoder`` and
  ``base.unet``): only the text encoder trains, against that UNet, which stays bit for bit as it was.
  ``text_encoder_lr`` (default ``optim.lr``; with ``train_text_encoder``): the encoder's peak rate,
  on the same warm-up and schedule as the UNet's (its rate is the UNet's times
  ``text_encoder_lr / optim.lr`` at every step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..world.captions import make_caption
from ..world.categories import THINGS
from ..world.conditions import decode_segmentation
from ..world.dataset import SceneWorldDataset, collate, make_sample, scene_seed
from ..world.scene import WorldConfig, sample_scene
from .config import TrainConfig
from .loop import train, training_device, warn_if_emulated_bf16
from .pools import render_pool, to_unit

log = logging.getLogger(__name__)
MODALITIES = ("image", "seg", "depth", "normal", "sketch")
SHARD = "15MB"  # final weights in files small enough to come back from the GPU machine


def _world(cfg: TrainConfig, **over) -> WorldConfig:
    return WorldConfig.from_dict({**WorldConfig().to_dict(), **cfg.data.world, **over})


def _loader(cfg: TrainConfig, seed: int, n: int, conditions=()) -> torch.utils.data.DataLoader:
    ds = SceneWorldDataset(n, size=cfg.data.size, seed=seed, config=_world(cfg), conditions=tuple(conditions))
    return torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.data.workers,
                                       collate_fn=collate, drop_last=len(ds) >= cfg.batch_size,
                                       persistent_workers=cfg.data.workers > 0,
                                       generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip


def _forever(loader) -> Iterator[dict]:
    while True:
        yield from loader


def _captions(cfg: TrainConfig, seed: int, n: int) -> list[str]:
    wc = _world(cfg)
    out = []
    for i in range(n):
        s = scene_seed(seed, i)
        out.append(
            make_caption(sample_scene(s, wc), np.random.default_rng(np.random.SeedSequence([s, 0xCA7])), wc).text
        )
    return out


def _load(loader, path, what: str):
    """Load a trained component, reporting a missing or broken folder as a ValueError naming it."""
    if not Path(path).is_dir():  # else the hub loaders report a failed hub connection
        why = "is not a folder" if Path(path).exists() else "does not exist"
        raise ValueError(f"{what} {str(path)!r} {why} (expected a trained component's folder)")
    try:
        return loader(path)
    except Exception as e:  # transformers/diffusers raise OSError, ValueError, EnvironmentError, ...
        raise ValueError(f"{what} {str(path)!r} could not be loaded: {type(e).__name__}: {e}") from None


def load_vae(path: str | Path, what: str = "vae"):
    """A trained MiniVAE (``AutoencoderKL``) from its folder or from an SD pipeline folder's ``vae/``
    (safetensors only)."""
    from diffusers import AutoencoderKL

    path = Path(path)
    if (path / "model_index.json").exists():
        path = path / "vae"
    return _load(lambda p: AutoencoderKL.from_pretrained(p, use_safetensors=True), path, what)


def load_clip(path: str | Path, what: str = "clip"):
    """A trained MiniCLIP (a full ``CLIPModel`` folder, as ``fgdm train clip`` writes it, with its
    tokenizer) -> (model, tokenizer). Safetensors only."""
    from transformers import CLIPModel, CLIPTokenizer

    clip = _load(lambda p: CLIPModel.from_pretrained(p, use_safetensors=True), path, what)
    return clip, _load(CLIPTokenizer.from_pretrained, path, f"{what} (its tokenizer)")


def _write_metrics(cfg: TrainConfig, metrics: dict) -> dict:
    Path(cfg.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(cfg: TrainConfig, **_) -> dict:
    from transformers import CLIPTokenizer

    from ..models.tokenizer import save_bpe, train_bpe

    if (Path(cfg.output_dir) / "final" / "vocab.json").exists():
        raise ValueError(f"output_dir {cfg.output_dir!r} already holds a trained tokenizer; choose another output_dir")
    t0 = time.perf_counter()
    vocab, merges = train_bpe(_captions(cfg, cfg.data.seed, cfg.data.n_scenes), cfg.model.get("vocab_size", 2048))
    out = save_bpe(vocab, merges, Path(cfg.output_dir) / "final")
    tok = CLIPTokenizer.from_pretrained(out)
    held = _captions(cfg, cfg.data.holdout_seed, cfg.data.holdout_n)
    lengths = [len(tok(c).input_ids) for c in held]
    unk = sum(i == tok.unk_token_id for c in held for i in tok(c).input_ids[1:-1])
    return _write_metrics(cfg, {
        "vocab_size": len(vocab), "merges": len(merges), "seconds": round(time.perf_counter() - t0, 2),
        "holdout_mean_tokens": round(float(np.mean(lengths)), 2), "holdout_max_tokens": int(max(lengths)),
        "holdout_unknown_tokens": int(unk),
    })  # fmt: skip


# ----------------------------------------------------------------------------- VAE


def build_vae(arch: dict):
    from diffusers import AutoencoderKL

    a = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [32, 64, 128],
         "layers_per_block": 1, "norm_num_groups": 16, **arch}  # fmt: skip
    n = len(a["block_out_channels"])
    a.setdefault("down_block_types", ["DownEncoderBlock2D"] * n)
    a.setdefault("up_block_types", ["UpDecoderBlock2D"] * n)
    return AutoencoderKL(**a)


def _pool(cfg: TrainConfig, fields: tuple[str, ...], dev: torch.device, progress: bool) -> dict:
    """The trainer's pre-rendered pool (``extra.pool`` scenes, default ``data.n_scenes``), its
    tensors moved to the training device."""
    data = render_pool(int(cfg.extra.get("pool", cfg.data.n_scenes)), seed=cfg.data.seed, size=cfg.data.size,
                       workers=cfg.data.workers, world=cfg.data.world, fields=fields, progress=progress)  # fmt: skip
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in data.items()}


def _modality_probs(extra: dict) -> torch.Tensor | None:
    """``extra.modality_probs`` -> normalised odds over MODALITIES (None: all equal)."""
    given = extra.get("modality_probs")
    if given is None:
        return None
    if not isinstance(given, dict) or not given:
        raise ValueError(f"extra.modality_probs must map modalities to odds, e.g. {{image: 1, seg: 3}}; got {given!r}")
    unknown = sorted(set(given) - set(MODALITIES))
    if unknown:
        raise ValueError(f"extra.modality_probs: unknown modalities {unknown}; known: {list(MODALITIES)}")
    w = []
    for m in MODALITIES:
        v = given.get(m, 0)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"extra.modality_probs.{m} must be a number >= 0, got {v!r}")
        w.append(float(v))
    if sum(w) <= 0:
        raise ValueError(f"extra.modality_probs gives every modality odds 0: {given!r}")
    return torch.tensor(w) / sum(w)


_ENCODER_PARTS = ("encoder", "quant_conv")  # what turns an image into latents in an AutoencoderKL


def train_vae(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    freeze = bool(cfg.extra.get("freeze_encoder", False))
    probs = _modality_probs(cfg.extra)
    start_from = cfg.base.get("vae")
    if freeze and not start_from:
        raise ValueError("extra.freeze_encoder needs base.vae: the trained VAE whose encoder is kept")
    if start_from:  # fine-tune a trained VAE (its architecture; the config's model: is not used)
        vae = load_vae(start_from, "base.vae")
        if cfg.model:
            log.info("base.vae given: the architecture is %s's, model: in the config is ignored", start_from)
    else:
        vae = build_vae(cfg.model)
    if freeze:
        for part in _ENCODER_PARTS:
            getattr(vae, part).requires_grad_(False)
        kept = {k: v.clone() for k, v in vae.state_dict().items() if k.split(".")[0] in _ENCODER_PARTS}
        kept_scale = vae.config.scaling_factor
    kl_w = float(cfg.extra.get("kl_weight", 1e-6))
    dev = training_device()
    keys = ("image", *(f"cond_{m}" for m in MODALITIES[1:]))
    data = _pool(cfg, keys, dev, progress)
    n = len(data["image"])
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    probs = probs.to(dev) if probs is not None else None

    def batches():  # one modality drawn per sample: images and every condition map, one VAE
        while True:
            idx = torch.randint(n, (cfg.batch_size,), generator=gen, device=dev)
            if probs is None:
                mod = torch.randint(len(keys), (cfg.batch_size, 1, 1, 1), generator=gen, device=dev)
            else:
                mod = torch.multinomial(probs, cfg.batch_size, replacement=True, generator=gen).view(-1, 1, 1, 1)
            x = data[keys[0]][idx]
            for k, key in enumerate(keys[1:], 1):
                x = torch.where(mod == k, data[key][idx], x)
            yield to_unit(x)

    def loss_fn(model, x, step):
        with torch.no_grad() if freeze else contextlib.nullcontext():  # a frozen encoder: no graph through it
            post = model.encode(x).latent_dist
        rec = model.decode(post.sample()).sample
        l1 = (rec.float() - x.float()).abs().mean()
        loss = l1 if freeze else l1 + kl_w * post.kl().mean() / x[0].numel()  # nothing learns from a frozen KL
        return loss, {"l1": round(float(l1.detach()), 5)}

    res = train(cfg, vae, loss_fn, batches(), resume=resume, progress=progress)
    final = res.ema or res.model
    if freeze:  # exactly base.vae's encoder (a resumed EMA went through a bf16 checkpoint)
        final.load_state_dict(kept, strict=False)
    metrics = evaluate_vae(final, cfg)
    if freeze:  # the latents are base.vae's, so is their scale (the UNet learnt with it)
        metrics["scaling_factor"] = kept_scale
        metrics["frozen_encoder_from"] = str(start_from)
    final.register_to_config(scaling_factor=metrics["scaling_factor"])
    final.save_pretrained(Path(cfg.output_dir) / "final", safe_serialization=True, max_shard_size=SHARD)
    return _write_metrics(cfg, {**metrics, **res.summary()})


@torch.no_grad()
def evaluate_vae(vae, cfg: TrainConfig, *, sheet: str | Path | None = None, sheet_rows: int = 6,
                 progress: bool = False) -> dict:  # fmt: skip
    """Held-out reconstruction PSNR per modality, palette decode accuracy of segmentation maps
    after a round trip, and the latent scaling factor (1 / std of the latents).

    ``sheet``: also write a contact sheet (PNG) of the first ``sheet_rows`` held-out scenes, each
    modality next to its reconstruction.
    """
    from tqdm.auto import tqdm

    vae = vae.eval()
    dev = next(vae.parameters()).device
    ds = SceneWorldDataset(cfg.data.holdout_n, size=cfg.data.size, seed=cfg.data.holdout_seed, config=_world(cfg))
    psnr: dict[str, list[float]] = {m: [] for m in MODALITIES}
    acc, zs, rows, notes = [], [], [], []

    def u8(t: torch.Tensor) -> np.ndarray:
        return ((t[0].permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).clip(0, 255)

    for i in tqdm(range(len(ds)), desc="evaluate vae", unit="scene", disable=not progress):
        item, row = ds[i], []
        for m in MODALITIES:
            x = (item["image"] if m == "image" else item[f"cond_{m}"])[None].to(dev)
            z = vae.encode(x.to(vae.dtype)).latent_dist.mode()
            if m == "image":
                zs.append(z.flatten().float().cpu())
            rec = vae.decode(z).sample.float().clamp(-1, 1)
            mse = F.mse_loss((rec + 1) / 2, (x.float() + 1) / 2).item()
            psnr[m].append(10 * math.log10(1 / max(mse, 1e-10)))
            if m == "seg":
                acc.append(float((decode_segmentation(u8(rec)) == item["seg"].numpy()).mean()))
            if i < sheet_rows:
                row += [u8(x).astype(np.uint8), u8(rec).astype(np.uint8)]
        if i < sheet_rows:
            rows.append(row)
            notes.append("PSNR " + ", ".join(f"{m} {psnr[m][-1]:.1f}" for m in MODALITIES)
                         + f" dB; seg palette decode {acc[-1]:.3f}")  # fmt: skip
    std = torch.cat(zs).float().std().item()
    result = {"psnr_db": {m: round(float(np.mean(v)), 2) for m, v in psnr.items()},
              "seg_palette_accuracy": round(float(np.mean(acc)), 4), "scaling_factor": round(1.0 / max(std, 1e-6), 5),
              "holdout_n": len(ds)}  # fmt: skip
    if sheet is not None:
        from ..world.sheet import contact_sheet, save_sheet

        headers = [h for m in MODALITIES for h in (m, f"{m} rec.")]
        result["sheet"] = str(save_sheet(contact_sheet(rows, headers=headers, captions=notes, cell=96), sheet))
    return result


# ----------------------------------------------------------------------------- MiniCLIP


def _tokenizer(cfg: TrainConfig):
    from transformers import CLIPTokenizer

    if "tokenizer" not in cfg.base:
        raise ValueError("base.tokenizer (a trained tokenizer folder) is required for this component")
    return _load(CLIPTokenizer.from_pretrained, cfg.base["tokenizer"], "base.tokenizer")


def build_clip(arch: dict, vocab_size: int, image_size: int, tok):
    from transformers import CLIPConfig, CLIPModel

    text = {"vocab_size": vocab_size, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
            "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, **arch.get("text", {})}  # fmt: skip
    vision = {"image_size": image_size, "patch_size": 16, "hidden_size": 256, "intermediate_size": 1024,
              "num_hidden_layers": 4, "num_attention_heads": 4, **arch.get("vision", {})}  # fmt: skip
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch.get("projection_dim", 256)))


_TEXT_PARTS = ("text_model", "text_projection")  # a CLIPModel's text tower: MiniSD's text encoder


def train_clip(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    from transformers import CLIPModel

    freeze = bool(cfg.extra.get("freeze_text", False))
    start_from = cfg.base.get("clip")
    if freeze and not start_from:
        raise ValueError("extra.freeze_text needs base.clip: the trained MiniCLIP whose text tower is kept")
    tok = _tokenizer(cfg)
    if start_from:  # fine-tune a trained MiniCLIP (its architecture; the config's model: is not used)
        try:
            clip = CLIPModel.from_pretrained(start_from, use_safetensors=True, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"base.clip {str(start_from)!r} is not a trained MiniCLIP folder ({e})") from None
        if clip.config.vision_config.image_size != cfg.data.size:
            raise ValueError(f"base.clip sees {clip.config.vision_config.image_size}-px images, data.size is "
                             f"{cfg.data.size}")  # fmt: skip
    else:
        clip = build_clip(cfg.model, len(tok), cfg.data.size, tok)
    if freeze:
        for part in _TEXT_PARTS:
            getattr(clip, part).requires_grad_(False)
        kept = {k: v.clone() for k, v in clip.state_dict().items() if k.split(".")[0] in _TEXT_PARTS}
    dev = training_device()
    data = _pool(cfg, ("image", "caption"), dev, progress)
    ids = tok(data["caption"], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ids = ids.to(dev)
    if freeze:  # the text side is fixed: embed every caption of the pool once
        clip.to(dev)
        with torch.no_grad():
            text_emb = torch.cat([F.normalize(clip.text_projection(clip.text_model(input_ids=ids[i : i + 256]).pooler_output),
                                              dim=-1) for i in range(0, len(ids), 256)])  # fmt: skip
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)

    def batches():
        while True:
            idx = torch.randint(len(ids), (cfg.batch_size,), generator=gen, device=dev)
            yield {"pixel_values": to_unit(data["image"][idx]), "input_ids": ids[idx], "idx": idx}

    def loss_fn(model, batch, step):
        if not freeze:
            return model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], return_loss=True).loss, {}
        img = F.normalize(model.visual_projection(model.vision_model(pixel_values=batch["pixel_values"]).pooler_output),
                          dim=-1)  # fmt: skip
        logits = model.logit_scale.exp() * img @ text_emb[batch["idx"]].T.to(img.dtype)  # (B images, B captions)
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits.float(), target) + F.cross_entropy(logits.float().T, target)) / 2, {}

    res = train(cfg, clip, loss_fn, batches(), resume=resume, progress=progress)
    final = res.ema or res.model
    if freeze:  # exactly base.clip's text tower (a resumed EMA went through a bf16 checkpoint)
        final.load_state_dict(kept, strict=False)
    final.save_pretrained(Path(cfg.output_dir) / "final", safe_serialization=True, max_shard_size=SHARD)
    tok.save_pretrained(Path(cfg.output_dir) / "final")
    metrics = evaluate_clip(final, tok, cfg)
    if freeze:
        metrics["frozen_text_from"] = str(start_from)
    return _write_metrics(cfg, {**metrics, **res.summary()})


@torch.no_grad()
def evaluate_clip(clip, tok, cfg: TrainConfig) -> dict:
    """Zero-shot category classification on held-out single-object renders ("a photo of a X")."""
    clip = clip.eval()
    dev = next(clip.parameters()).device
    names = [c.singular for c in THINGS]
    ids = tok([f"a photo of a {n}" for n in names], padding="max_length", max_length=77, return_tensors="pt").input_ids
    text = F.normalize(clip.text_projection(clip.text_model(input_ids=ids.to(dev)).pooler_output), dim=-1)
    wc = _world(cfg, min_objects=1, max_objects=1)
    pairs = []  # (true, predicted) category index per held-out render
    for i in range(cfg.data.holdout_n):
        s = make_sample(i, seed=cfg.data.holdout_seed, size=cfg.data.size, config=wc)
        x = torch.from_numpy(s.render.image).permute(2, 0, 1).float().div(127.5).sub(1)[None].to(dev)
        img = F.normalize(clip.visual_projection(clip.vision_model(pixel_values=x).pooler_output), dim=-1)
        pairs.append((s.render.scene.objects[0].category_id, int((img @ text.T).argmax().item())))
    seen = Counter(t for t, _ in pairs)
    hits = Counter(t for t, p in pairs if t == p)
    acc = sorted(((hits[c] / n, names[c]) for c, n in seen.items() if n >= 5))  # categories with 5+ renders
    wrong = Counter((names[t], names[p]) for t, p in pairs if t != p)
    return {
        "zero_shot_accuracy": round(sum(hits.values()) / cfg.data.holdout_n, 4),
        "holdout_n": cfg.data.holdout_n,
        "classes": len(names),
        "worst": [(name, round(a, 2)) for a, name in acc[:8]],  # accuracy of the 8 hardest categories
        "confusions": [(f"{t} -> {p}", k) for (t, p), k in wrong.most_common(5)],
    }


# ----------------------------------------------------------------------------- UNet


def build_unet(arch: dict, latent_size: int, cross_dim: int):
    from diffusers import UNet2DConditionModel

    a = {"sample_size": latent_size, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
         "block_out_channels": [64, 128, 192], "attention_head_dim": 8, "cross_attention_dim": cross_dim,
         "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
         "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], "norm_num_groups": 32, **arch}  # fmt: skip
    return UNet2DConditionModel(**a)


def load_unet(path: str | Path, *, vae_factor: int, cross_dim: int, config: str | Path | None = None,
              what: str = "unet", default_config: TrainConfig | None = None):  # fmt: skip
    """A trained UNet from a ``save_pretrained`` folder (a run's ``final/``, a pipeline's ``unet/``) or
    from a training checkpoint (``state.json`` + ``ema-*``/``model-*`` shards, e.g. ``checkpoints/unet``
    or ``runs/train/unet/checkpoints/step-NNNNNNN``): its EMA weights where it has them, else its
    weights. A checkpoint holds no architecture: it is read from ``config`` (a UNet training config,
    YAML), else from the run's own ``config.json`` beside its ``checkpoints/`` folder, else from
    ``default_config`` (a run starting from the checkpoint passes its own). ``vae_factor`` (the VAE's
    downsampling; the latent side is the config's ``data.size`` over it) and ``cross_dim`` (the text
    encoder's width) complete it."""
    from diffusers import UNet2DConditionModel

    from .checkpoint import load_sharded
    from .config import load_train_config, train_config_from_dict

    path = Path(path)
    if (path / "model_index.json").exists():
        path = path / "unet"
    if not (path / "state.json").exists():
        if config is not None:  # a saved UNet carries its own architecture: a config would be ignored
            raise ValueError(f"{what} {str(path)!r} is not a training checkpoint (no state.json): its architecture "
                             "is its own config.json, so give no UNet config (--unet-config) with it")  # fmt: skip
        return _load(lambda p: UNet2DConditionModel.from_pretrained(p, use_safetensors=True), path, what)
    run_cfg = path.parent.parent / "config.json"
    if config is not None:
        cfg = load_train_config(config)
    elif run_cfg.exists():
        try:
            cfg = train_config_from_dict(json.loads(run_cfg.read_text()))
        except ValueError as e:  # broken JSON or keys this version does not know
            raise ValueError(f"the run config {str(run_cfg)!r} of {what} {str(path)!r} cannot be used ({e}); "
                             "give its architecture with --unet-config") from None  # fmt: skip
    elif default_config is not None:
        cfg = default_config
    else:
        raise ValueError(f"{what} {str(path)!r} is a training checkpoint with no run config.json beside it: "
                         "give its architecture with a UNet training config (--unet-config)")  # fmt: skip
    if cfg.component != "unet":
        raise ValueError(f"the config for {what} {str(path)!r} is a {cfg.component!r} config, not a UNet one")
    unet = build_unet(cfg.model, cfg.data.size // vae_factor, cross_dim)
    prefix = "ema" if any(path.glob("ema-*.safetensors")) else "model"
    state = load_sharded(path, prefix)
    if any(k.startswith("unet.") for k in state):  # a run that trained the text encoder too: its UNet part
        state = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    try:
        unet.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:  # the architecture does not match the weights
        first = str(e).strip().splitlines()[:3]
        raise ValueError(f"{what} {str(path)!r} does not fit the UNet its config describes: {' '.join(first)}") from None
    return unet


def sd_noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False)  # fmt: skip


def base_noise_scheduler(scheduler_config) -> object:
    """The training-noise schedule of a base pipeline (its betas and prediction type), for models
    trained into it (FG-DM factors): what its sampler will assume."""
    from diffusers import DDPMScheduler

    pred = scheduler_config.get("prediction_type", "epsilon")
    if pred not in ("epsilon", "v_prediction"):
        raise ValueError(f"the base model predicts {pred!r}; factors can be trained on epsilon or v_prediction bases")
    return DDPMScheduler.from_config(scheduler_config, clip_sample=False)


def training_target(noise, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the model should output for ``x0`` noised with ``eps`` at ``t``: epsilon, or v =
    sqrt(a) eps - sqrt(1 - a) x0 for a v-prediction schedule (SD 2.x at 768 px)."""
    if noise.config.prediction_type == "v_prediction":
        return noise.get_velocity(x0, eps, t)
    return eps


def _text_encoder(cfg: TrainConfig):
    from transformers import CLIPModel, CLIPTextModel

    path = Path(cfg.base.get("text_encoder", ""))
    if not (path / "config.json").exists():
        raise ValueError(f"base.text_encoder must be a trained MiniCLIP (or CLIPTextModel) folder, got {str(path)!r}")
    arch = json.loads((path / "config.json").read_text()).get("architectures", [""])[0]
    if arch == "CLIPModel":
        clip = _load(lambda p: CLIPModel.from_pretrained(p, use_safetensors=True), path, "base.text_encoder")
        te = CLIPTextModel(clip.config.text_config)
        getattr(te, "text_model", te).load_state_dict(clip.text_model.state_dict())  # transformers 4 nests it
        return te
    # fp32 whatever the folder holds: an assembled pipeline's encoder is fp16, and a trained encoder
    # (extra.train_text_encoder) needs fp32 weights beside the fp32 UNet
    return _load(lambda p: CLIPTextModel.from_pretrained(p, use_safetensors=True), path, "base.text_encoder").float()


_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}  # mixed_precision -> autocast dtype ("no": none)


@torch.no_grad()
def prerender(cfg: TrainConfig, vae, text_fn, dev, modalities: tuple[str, ...] = ("image",),
              progress: bool = True, token_fn=None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Render, VAE-encode and text-encode every training scene once (a progress bar per scene).

    Returns ``lat_<modality>`` (N, 4, h, w) fp16 scaled latents per modality (``image`` or a
    condition name; the modality ``labels`` is instead the seg maps' class ids, ``labels`` (N, H, W)
    uint8, and ``token_classes`` the class id each caption token names, (N, T) int16 from
    ``token_fn(captions)``, -1 for none) and ``embeddings`` (N, T, D) fp16 from ``text_fn(captions)`` (or, where it
    returns integers, its token ids as int32). The encoders run
    under autocast in the run's ``mixed_precision`` (bf16: 2-3x faster VAE encoding on the CPUs
    measured first, the latents within 0.5% of fp32 — results.md; 57x slower on an AVX2-only one,
    which is warned about; they are stored in fp16 either way).
    """
    conds = tuple(m for m in modalities if m not in ("image", "labels", "token_classes"))
    if "token_classes" in modalities and token_fn is None:
        raise ValueError("prerender: the modality 'token_classes' needs token_fn")
    ds = SceneWorldDataset(cfg.data.n_scenes, size=cfg.data.size, seed=cfg.data.seed, config=_world(cfg),
                           conditions=conds)  # fmt: skip
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.data.workers, collate_fn=collate)
    raw = ("labels", "token_classes")  # stored as they are, not VAE latents
    out: dict[str, list[torch.Tensor]] = {m if m in raw else f"lat_{m}": [] for m in modalities} | {"embeddings": []}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(ds), desc=f"pre-encode {'+'.join(modalities)}", unit="scene", disable=not progress)
    amp = _AMP.get(cfg.mixed_precision)
    dev_type = torch.device(dev).type
    warn_if_emulated_bf16(cfg.mixed_precision, dev, where="pre-encoding")
    gen = torch.Generator(device=dev).manual_seed(cfg.data.seed)  # the posterior samples: the same cache every time
    for b in loader:
        bar.update(len(b["caption"]))
        with torch.autocast(dev_type, amp) if amp is not None else contextlib.nullcontext():
            for m in modalities:
                if m == "labels":  # the seg maps' class ids (void 255), for factors that read classes
                    out["labels"].append(b["seg"].to(torch.uint8))
                    continue
                if m == "token_classes":
                    out["token_classes"].append(token_fn(b["caption"]).to(torch.int16))
                    continue
                x = b["image"] if m == "image" else b[f"cond_{m}"]
                z = vae.encode(x.to(dev, vae.dtype)).latent_dist.sample(gen) * vae.config.scaling_factor
                out[f"lat_{m}"].append(z.half())
            e = text_fn(b["caption"])  # states, or token ids when the text encoder trains
            out["embeddings"].append(e.half() if e.is_floating_point() else e.int())
    bar.close()
    return {k: torch.cat(v) for k, v in out.items()}


def cached_prerender(cfg: TrainConfig, vae, text_fn, dev, modalities: tuple[str, ...], sources: dict,
                     name: str = "prerender", folder: str | Path | None = None,
                     progress: bool = True, token_fn=None) -> dict[str, torch.Tensor]:  # fmt: skip
    """:func:`prerender`, cached in ``folder/<name>.safetensors`` (default folder: ``output_dir``)
    so resumed runs — and, with a shared ``folder``, other runs on the same data — skip it.

    The cache is used only if it was made from the same data settings, modalities and ``sources``
    (fingerprints of the components that encoded it), in the run's precision or in fp32. Runs
    started side by side take turns under a file lock: the first builds the cache, the others
    wait for it and load it.
    """
    import fcntl

    settings = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "workers"}  # workers change no sample
    base = {"data": settings, "modalities": list(modalities), **sources}
    key = json.dumps({**base, "encode_precision": cfg.mixed_precision}, sort_keys=True)
    # an fp32-encoded cache serves any run (a mixed-precision one gets better latents than its own);
    # caches written before the key named the precision were all encoded in fp32
    usable = {key, json.dumps({**base, "encode_precision": "no"}, sort_keys=True), json.dumps(base, sort_keys=True)}
    path = Path(folder or cfg.output_dir) / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.stem}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _load_or_build(path, key, usable, lambda: prerender(cfg, vae, text_fn, dev, modalities, progress, token_fn), dev)


def _load_or_build(path: Path, key: str, usable: set[str], build, dev) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    if path.exists():
        with safe_open(str(path), "pt") as f:
            same = (f.metadata() or {}).get("key") in usable
        if same:
            return load_file(str(path), device=str(dev))
        log.info("prerender cache %s is for other settings; rebuilding it", path)
    data = build()
    tmp = path.with_suffix(f".partial-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in data.items()}, str(tmp), metadata={"key": key})
    tmp.replace(path)
    return data


def min_snr_mse(pred: torch.Tensor, target: torch.Tensor, alphas_cumprod_t: torch.Tensor, gamma: float | None,
                prediction_type: str = "epsilon") -> torch.Tensor:  # fmt: skip
    """Per-sample MSE of an epsilon (or v) prediction, with min-SNR weighting (Hang et al. 2023)
    unless ``gamma`` is None: min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v."""
    err = ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
    if gamma is not None:
        snr = alphas_cumprod_t / (1 - alphas_cumprod_t)
        err = err * torch.clamp(snr, max=float(gamma)) / (snr + 1 if prediction_type == "v_prediction" else snr)
    return err


_PIPELINE_PARTS = ("tokenizer", "text_encoder", "vae", "unet")


def _pipeline_parts(base: dict) -> dict:
    """``base`` with every part that names a whole SD pipeline folder (``model_index.json``) pointed
    at that part's subfolder, so ``base.{tokenizer,text_encoder,vae,unet}: runs/minisd`` all work
    (and the pre-encoding cache is keyed by the parts it used, not by the whole pipeline)."""
    out = dict(base)
    for k in _PIPELINE_PARTS:
        if k in out and (Path(out[k]) / "model_index.json").exists():
            out[k] = str(Path(out[k]) / k)
    return out


def _start_unet(unet, path: str | Path, cfg: TrainConfig, *, vae_factor: int, cross_dim: int) -> None:
    """Load ``base.unet``'s weights (a saved UNet, a pipeline's, or a training checkpoint's EMA, e.g.
    the committed ``checkpoints/unet``, read with this run's architecture if its own run config is not
    beside it) into ``unet``, the architecture ``model:`` describes; they must match."""
    start = load_unet(path, vae_factor=vae_factor, cross_dim=cross_dim, what="base.unet", default_config=cfg)
    if start.config.sample_size != unet.config.sample_size:
        raise ValueError(f"base.unet {str(path)!r} works on {start.config.sample_size}-px latents, this run on "
                         f"{unet.config.sample_size} (data.size {unet.config.sample_size * vae_factor})")  # fmt: skip
    try:
        unet.load_state_dict({k: v.float() for k, v in start.state_dict().items()})
    except RuntimeError as e:
        raise ValueError(f"base.unet {str(path)!r} does not fit the UNet that model: describes (set model: to its "
                         f"architecture, e.g. the config it was trained with): {str(e).splitlines()[0]}") from None  # fmt: skip


def _start_history(path: str | Path) -> list[dict]:
    """A new run's provenance: the history of the training checkpoint ``base.unet`` names (if it is
    one; a pipeline folder is already resolved to its ``unet/``), then where the run started; its own
    steps count from 0 again."""
    p = Path(path)
    entry: dict = {"started_from": str(path)}
    before: list[dict] = []
    if (p / "state.json").exists():
        try:
            state = json.loads((p / "state.json").read_text())
            before, entry["at_step"] = list(state.get("history", [])), state.get("step")
        except (OSError, ValueError, AttributeError, TypeError) as e:
            raise ValueError(f"base.unet {str(path)!r}: its state.json cannot be read ({e})") from None
        entry["note"] = "a new run from this checkpoint's weights (EMA where it had one); its steps count from 0"
    return [*before, entry]


class UNetAndTextEncoder(torch.nn.Module):
    """The UNet and the text encoder as one module, so that the training loop, its EMA and its
    checkpoints (keys ``unet.*``, ``text_encoder.*``) treat them as one model; ``forward`` takes
    token ids (one call, so it also works wrapped for data-parallel training)."""

    def __init__(self, unet, text_encoder) -> None:
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder

    def forward(self, zt: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.unet(zt, t, encoder_hidden_states=self.text_encoder(ids)[0]).sample


def holds_text_encoder(ck: str | Path) -> bool:
    """Whether a training checkpoint folder's weights include the text encoder (a run with
    ``extra.train_text_encoder``): any key ``text_encoder.*`` in any shard (only the keys are read).
    Also what ``scripts/device_stage.sh`` asks of a committed checkpoint."""
    from safetensors import safe_open

    for shard in sorted(Path(ck).glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            if any(k.startswith("text_encoder.") for k in f.keys()):  # noqa: SIM118 (safe_open is not iterable)
                return True
    return False


def _check_resumable(out: Path, joint: bool) -> None:
    """A run resumes only a checkpoint of its own kind: UNet alone, or UNet and text encoder."""
    from .checkpoint import latest_checkpoint

    ck = latest_checkpoint(out)
    if ck is None or not any(ck.glob("*.safetensors")):
        return  # the loop reports a missing checkpoint
    has_text = holds_text_encoder(ck)
    if has_text != joint:
        held = "the UNet and the text encoder" if has_text else "the UNet alone"
        raise ValueError(f"--resume: {str(ck)!r} holds {held}, but extra.train_text_encoder is {str(joint).lower()}; "
                         + ("set it to true to go on" if has_text else
                            "to train the encoder from this UNet, start a new run with base.unet set to that checkpoint"))  # fmt: skip


def train_unet(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """The UNet, from scratch or, with ``base.unet``, from a trained one (e.g. MiniSD's, to go on
    training the shipped fp16 weights or to fine-tune them on other scenes); a resumed run goes on
    from its own checkpoint and ignores ``base.unet``. With ``extra.train_text_encoder`` the text
    encoder (from ``base.text_encoder``) trains with it."""
    cfg = dataclasses.replace(cfg, base=_pipeline_parts(cfg.base))
    dev = training_device()
    tok = _tokenizer(cfg)
    joint = bool(cfg.extra.get("train_text_encoder", False))
    frozen_unet = bool(cfg.extra.get("freeze_unet", False))
    if frozen_unet and not (joint and (cfg.base.get("unet") or resume)):
        raise ValueError("extra.freeze_unet trains the text encoder alone against a trained UNet: it needs "
                         "extra.train_text_encoder: true and base.unet")  # fmt: skip
    te_lr = cfg.extra.get("text_encoder_lr")
    if te_lr is not None:
        if isinstance(te_lr, bool) or not isinstance(te_lr, int | float) or te_lr <= 0:
            raise ValueError(f"extra.text_encoder_lr must be a positive number, got {te_lr!r}")
        if not joint:
            raise ValueError(f"extra.text_encoder_lr ({te_lr}) is the rate of a training text encoder: it needs "
                             "extra.train_text_encoder: true")  # fmt: skip
    te = _text_encoder(cfg).to(dev).eval().requires_grad_(joint)
    if "vae" not in cfg.base:
        raise ValueError("base.vae (a trained MiniVAE folder) is required to train the UNet")
    vae = load_vae(cfg.base["vae"], "base.vae")
    vae = vae.to(dev).eval().requires_grad_(False)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_unet(cfg.model, cfg.data.size // factor, te.config.hidden_size)
    started_from = cfg.base.get("unet") if not resume else None  # a resumed run continues its own checkpoint
    if started_from:
        _start_unet(unet, started_from, cfg, vae_factor=factor, cross_dim=te.config.hidden_size)
    noise = sd_noise_scheduler()
    p_drop = float(cfg.extra.get("caption_dropout", 0.1))
    gamma = cfg.extra.get("min_snr_gamma", 5.0)

    def ids_of(captions) -> torch.Tensor:
        return tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(dev)

    def text_fn(captions):  # what a batch carries: token ids for a training encoder, else its states
        if joint:
            return ids_of(captions)
        with torch.no_grad():
            return te(ids_of(captions))[0]

    uncond = text_fn([""])[0]  # the empty caption: a dropped caption's ids, or its states
    rank = int(os.environ.get("RANK", "0"))  # one random stream per process under `accelerate launch`
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1000 * rank)  # draws on the training device

    if cfg.extra.get("prerender", True):
        t0 = time.perf_counter()
        from ..models.pipeline import fingerprint

        sources = {k: fingerprint(cfg.base[k]) for k in ("vae", "text_encoder", "tokenizer")}
        if joint:  # token ids do not depend on the encoder's weights; a cache of states would be another file
            sources["text"] = "token ids"
        data = cached_prerender(cfg, vae, text_fn, dev, ("image",), sources, progress=progress,
                                name="prerender-ids" if joint else "prerender")  # fmt: skip
        lats, embs = data["lat_image"], data["embeddings"]
        log.info("pre-encoded %d scenes in %.1f s", len(lats), time.perf_counter() - t0)

        def batches():
            while True:
                idx = torch.randint(len(lats), (cfg.batch_size,), generator=gen, device=dev)
                e = embs[idx.to(embs.device)]
                yield {"latents": lats[idx.to(lats.device)].float(), "emb": e.long() if joint else e.float()}
    else:

        def batches():
            for b in _forever(_loader(cfg, cfg.data.seed, cfg.data.n_scenes)):
                with torch.no_grad():
                    z = vae.encode(b["image"].to(dev)).latent_dist.sample() * vae.config.scaling_factor
                yield {"latents": z, "emb": text_fn(b["caption"])}

    ac = noise.alphas_cumprod.to(dev)

    def loss_fn(model, batch, step):
        z, emb = batch["latents"].to(dev), batch["emb"].to(dev)
        b = z.shape[0]
        drop = torch.rand(b, generator=gen, device=dev) < p_drop
        emb = torch.where(drop.view(-1, *([1] * (emb.dim() - 1))), uncond.expand_as(emb), emb)
        t = torch.randint(0, noise.config.num_train_timesteps, (b,), generator=gen, device=dev)
        eps = torch.randn(z.shape, generator=gen, device=dev)
        zt = noise.add_noise(z, eps, t)
        pred = model(zt, t, emb) if joint else model(zt, t, encoder_hidden_states=emb).sample
        return min_snr_mse(pred, eps, ac[t], gamma).mean(), {}

    unet.requires_grad_(not frozen_unet)
    model = UNetAndTextEncoder(unet, te) if joint else unet
    if resume:
        _check_resumable(Path(cfg.output_dir), joint)
    prior = _start_history(started_from) if started_from else None
    groups = None
    if te_lr is not None:  # the encoder at its own rate (a frozen UNet's group is empty and left out)
        groups = [{"name": "unet", "params": [p for p in unet.parameters() if p.requires_grad]},
                  {"name": "text_encoder", "params": list(te.parameters()), "lr_scale": float(te_lr) / cfg.optim.lr}]  # fmt: skip
        groups = [g for g in groups if g["params"]]
    res = train(cfg, model, loss_fn, batches(), resume=resume, progress=progress, history=prior, params=groups)
    final = res.ema or res.model
    out = Path(cfg.output_dir)
    final_unet = final.unet if joint else final
    final_unet.save_pretrained(out / "final", safe_serialization=True, max_shard_size=SHARD)
    if joint:
        final.text_encoder.save_pretrained(out / "final-text-encoder", safe_serialization=True, max_shard_size=SHARD)
    return _write_metrics(cfg, {**res.summary(), "parameters": sum(p.numel() for p in final_unet.parameters()),
                                "started_from": started_from, "text_encoder_trained": joint,
                                "text_encoder_lr": (te_lr if te_lr is not None else cfg.optim.lr) if joint else None,
                                "unet_trained": not frozen_unet})  # fmt: skip


# ----------------------------------------------------------------------------- assembly


def assemble_pipeline(*, tokenizer: str | Path, text_encoder: str | Path, vae: str | Path, unet: str | Path,
                      out: str | Path, fp16: bool = True, unet_config: str | Path | None = None) -> Path:  # fmt: skip
    """Put trained components together as a stock diffusers StableDiffusionPipeline directory
    (DDIM scheduler with SD's betas), weights as (fp16) safetensors. ``unet`` may be a training
    checkpoint (:func:`load_unet`; ``unet_config`` gives its architecture if its run's config.json
    is not beside it), so a UNet part-way through training can be looked at."""
    from ..models.pipeline import quiet_hf

    quiet_hf()  # before diffusers' pipeline import, whose warnings advise installing torchvision (it breaks torch here)
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from ..models.tokenizer import save_bpe

    tok = _load(CLIPTokenizer.from_pretrained, tokenizer, "tokenizer")
    cfg = TrainConfig(component="unet", output_dir=str(out), base={"text_encoder": str(text_encoder)})
    te = _text_encoder(cfg)
    vae = load_vae(vae)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tok,
        unet=load_unet(unet, vae_factor=factor, cross_dim=te.config.hidden_size, config=unet_config),
        scheduler=DDIMScheduler.from_config(sd_noise_scheduler().config, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    if fp16:
        pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    vocab = json.loads(Path(tokenizer, "vocab.json").read_text()) if Path(tokenizer, "vocab.json").exists() else None
    if vocab is not None:  # keep the classic CLIP tokenizer files too
        merges = Path(tokenizer, "merges.txt").read_text().splitlines()[1:]
        save_bpe(vocab, merges, Path(out) / "tokenizer", configs=False)
    return Path(out)


def _train_judge(cfg: TrainConfig, **kw) -> dict:
    from .judge import train_judge

    return train_judge(cfg, **kw)


def _train_factor(cfg: TrainConfig, **kw) -> dict:
    from .factors import train_factor

    return train_factor(cfg, **kw)


TRAINERS = {
    "tokenizer": train_tokenizer,
    "vae": train_vae,
    "clip": train_clip,
    "unet": train_unet,
    "judge": _train_judge,
    "factor": _train_factor,
    "image-factor": _train_factor,
}

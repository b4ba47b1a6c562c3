"""Loading base text-to-image pipelines: the shipped MiniSD or any diffusers SD 1.x/2.x directory.

Only safetensors weights are ever loaded; a directory holding pickle weights is refused, never
unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def default_model_dir() -> Path:
    """The shipped MiniSD pipeline directory (package data)."""
    return Path(str(resources.files("fgdm.models") / "data" / "minisd"))


def check_model_dir(path: str | Path, arg: str = "model") -> Path:
    """Validate a diffusers Stable Diffusion directory; raises ValueError naming ``arg`` and the path."""
    p = Path(path)
    if not p.exists():
        if p == default_model_dir():
            raise ValueError("no MiniSD is shipped with this build yet; pass --model DIR (a diffusers SD directory; "
                             "the README shows how to assemble the in-progress MiniSD from a checkout)")
        raise ValueError(f"{arg} {str(path)!r} does not exist")
    if not p.is_dir():
        raise ValueError(f"{arg} {str(path)!r} is not a folder (expected a diffusers pipeline directory)")
    index = p / "model_index.json"
    if not index.exists():
        raise ValueError(f"{arg} {str(path)!r} is not a diffusers pipeline: it has no model_index.json")
    try:
        spec = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{arg} {str(path)!r}: model_index.json is unreadable ({e})") from None
    missing = [c for c in COMPONENTS if c not in spec or not (p / c).is_dir()]
    if missing:
        raise ValueError(f"{arg} {str(path)!r} is not a Stable Diffusion pipeline: missing {missing}")
    for comp in ("unet", "vae", "text_encoder"):
        files = [f for f in (p / comp).iterdir() if f.is_file()]
        pickles = [f for f in files if f.suffix in PICKLE_SUFFIXES]
        safe = [f for f in files if f.suffix == ".safetensors"]
        if pickles and not safe:
            raise ValueError(
                f"{arg} {str(path)!r}: {comp}/{pickles[0].name} is a pickle checkpoint; fgdm loads safetensors only "
                "(convert it with diffusers' save_pretrained(safe_serialization=True))"
            )
        if not safe:
            raise ValueError(f"{arg} {str(path)!r}: {comp}/ holds no .safetensors weights")
    return p


@lru_cache(maxsize=8)
def _fingerprint(path: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(root.rglob("*")):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".txt")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def fingerprint(path: str | Path) -> str:
    """A short content hash of a pipeline directory (configs, tokenizer files and weights)."""
    root = Path(path)
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(root.rglob("*")) if f.is_file())
    return _fingerprint(str(root.resolve()), stamp)


@dataclass
class BaseModel:
    """The components of a Stable Diffusion pipeline, and where they came from."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    path: Path
    fingerprint: str

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def size_factor(self) -> int:
        """Image sides must be multiples of this (VAE downsampling x UNet downsampling)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_text(self, prompts: list[str], *, allow_empty: bool = False) -> tuple[torch.Tensor, list[list[str]]]:
        """Text-encoder hidden states (B, T, D) and the tokens of each prompt (padded to T).

        Prompts longer than the tokenizer's maximum are truncated with a warning naming what was
        dropped; empty prompts are an error unless ``allow_empty`` (the unconditional prompt).
        """
        tok = self.tokenizer
        max_len = tok.model_max_length
        for p in prompts:
            if not isinstance(p, str) or (not p.strip() and not allow_empty):
                raise ValueError(f"prompt must be a non-empty string, got {p!r}")
            ids = tok(p, truncation=False).input_ids
            if len(ids) > max_len:
                kept = tok.decode(ids[1 : max_len - 1])
                log.warning("prompt is longer than %d tokens; truncated to %r", max_len, kept)
        ids = tok(prompts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").input_ids
        emb = self.text_encoder(ids.to(self.device))[0]
        return emb, [tok.convert_ids_to_tokens(row.tolist()) for row in ids]

    def encode_text_rows(self, rows: list[str], *, allow_empty: bool = False) -> tuple[torch.Tensor, list[list[str]]]:
        """:meth:`encode_text` for a batch that repeats prompts (one row per image): each distinct
        prompt is encoded once, then copied to its rows."""
        unique = list(dict.fromkeys(rows))
        emb, tokens = self.encode_text(unique, allow_empty=allow_empty)
        where = {p: i for i, p in enumerate(unique)}
        idx = [where[p] for p in rows]
        return emb[torch.tensor(idx, device=emb.device)], [tokens[i] for i in idx]

    def class_tokens(self, prompts: list[str]) -> torch.Tensor:
        """(B, NUM_CLASSES, T) float, 1 where token t of prompt b (in :meth:`encode_text`'s rows, the
        start token at 0) belongs to a mention of class c (the world's vocabulary,
        :func:`~fgdm.world.vocab.parse_prompt`). A mention's tokens are found by tokenizing the
        text before it and up to its end, so any CLIP-style tokenizer works; tokens cut off by
        truncation are left out."""
        from ..world.categories import NUM_CLASSES, category
        from ..world.vocab import parse_prompt

        tok = self.tokenizer
        max_len = tok.model_max_length
        out = torch.zeros(len(prompts), NUM_CLASSES, max_len)
        n_tokens = lambda text: len(tok(text, truncation=False).input_ids) - 2  # without start and end
        for b, prompt in enumerate(prompts):
            for m in parse_prompt(prompt).mentions:
                first, stop = 1 + n_tokens(prompt[: m.start]), 1 + n_tokens(prompt[: m.end])
                out[b, category(m.category).id, first : min(stop, max_len - 1)] = 1
        return out

    def token_class_ids(self, prompts: list[str]) -> torch.Tensor:
        """(B, T) long: the class id each token of :meth:`encode_text`'s rows names, or -1 for none
        (from :meth:`class_tokens`; a token in mentions of two classes takes the first id)."""
        ct = self.class_tokens(prompts)
        return torch.where(ct.sum(1) > 0, ct.argmax(1), -1)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> BaseModel:
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(device=device, dtype=dtype)
        return self


def load_base_model(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    arg: str = "model",
) -> BaseModel:
    """Load a base pipeline's components (default: the shipped MiniSD), safetensors only, offline."""
    quiet_hf()
    from diffusers import StableDiffusionPipeline

    p = check_model_dir(default_model_dir() if path is None else path, arg)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            p, use_safetensors=True, local_files_only=True, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip
    except Exception as e:  # diffusers raises many types for corrupt files; report them as bad input
        raise ValueError(f"{arg} {str(path)!r} could not be loaded: {type(e).__name__}: {e}") from None
    model = BaseModel(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, p, fingerprint(p))
    for m in (model.unet, model.vae, model.text_encoder):
        m.eval().requires_grad_(False)
    return model.to(device, dtype)


def quiet_hf() -> None:
    """Silence the Hugging Face libraries' progress bars and chatter (fgdm reports what matters)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()

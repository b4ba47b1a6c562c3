"""MiniCLIP for evaluation: a complete ``CLIPModel`` folder, or one without a second copy of its text tower.

While MiniCLIP's text tower *is* a pipeline's text encoder (``fgdm train assemble`` copies it), the
evaluation copy can keep only what the pipeline lacks — the image tower and both projections, fp16,
about 3.9 MB instead of 8.3 — and borrow the text tower from the pipeline's ``text_encoder/`` at
load time; a fingerprint of the text tower's fp16 weights, written at save time, makes sure the
two halves belong together. The shipped MiniSD's encoder was trained on after that (docs/training.md),
so the shipped evaluation MiniCLIP is a complete ``CLIPModel`` folder (``fgdm train assemble-clip
--with-text``), which loads as it is, as ``fgdm train clip``'s ``final/`` does.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "eval_clip.safetensors"
INFO = "eval_clip.json"
TEXT_PREFIX = "text_model."


def default_clip_dir() -> Path:
    """The shipped evaluation MiniCLIP (package data)."""
    return Path(str(resources.files("fgdm.models") / "data" / "miniclip"))


def text_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Hash of a text tower's weights in fp16 (keys with or without the ``text_model.`` prefix)."""
    h = hashlib.sha256()
    for k in sorted(state):
        name = k if k.startswith(TEXT_PREFIX) else TEXT_PREFIX + k
        if name.endswith("position_ids"):
            continue  # a buffer some transformers versions save and others do not
        h.update(name.encode())
        t = state[k].detach().to("cpu")
        h.update((t.half() if t.is_floating_point() else t).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_eval_clip(clip, out: str | Path, tokenizer=None) -> Path:
    """Write ``clip`` (a ``CLIPModel``) without its text tower: config, fp16 image tower and
    projections, the text tower's fingerprint, and the tokenizer (if given)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = clip.state_dict()
    keep = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous()
            for k, v in state.items() if not k.startswith(TEXT_PREFIX)}  # fmt: skip
    text = {k: v for k, v in state.items() if k.startswith(TEXT_PREFIX)}
    save_file(keep, str(out / WEIGHTS))
    clip.config.to_json_file(str(out / "config.json"))
    (out / INFO).write_text(json.dumps({"text_fingerprint": text_fingerprint(text),
                                        "note": "the text tower is a pipeline's text_encoder/"}, indent=1))  # fmt: skip
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def load_eval_clip(path: str | Path | None = None, *, text_encoder: str | Path | None = None, device: str = "cpu"):
    """``(CLIPModel, CLIPTokenizer)`` from a full CLIPModel folder, or from an evaluation folder
    (:func:`save_eval_clip`) plus the text tower of ``text_encoder`` (a pipeline directory or its
    ``text_encoder/`` folder; default: the shipped MiniSD). Errors name the path."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from .pipeline import default_model_dir

    p = Path(path) if path is not None else default_clip_dir()
    if not (p / "config.json").exists():
        if path is None:
            raise ValueError("no MiniCLIP is shipped with this build yet; pass --clip DIR (from `fgdm train clip`; "
                             "in a checkout, runs/train/clip/final once checkpoints/base.tar is extracted as the "
                             "README shows)")  # fmt: skip
        raise ValueError(f"clip {str(path)!r} is not a CLIPModel folder (no config.json)")
    try:
        if not (p / WEIGHTS).exists():  # a complete CLIPModel folder
            return CLIPModel.from_pretrained(p, use_safetensors=True).to(device).eval(), CLIPTokenizer.from_pretrained(p)
        te = Path(text_encoder) if text_encoder is not None else default_model_dir()
        te_dir = te / "text_encoder" if (te / "text_encoder").is_dir() else te
        files = sorted(te_dir.glob("*.safetensors"))
        if not files:
            raise ValueError(f"text encoder {str(te_dir)!r} holds no .safetensors weights")
        text = {}
        for f in files:
            text.update(load_file(str(f)))
        want, got = json.loads((p / INFO).read_text())["text_fingerprint"], text_fingerprint(text)
        if got != want:
            raise ValueError(f"the text encoder {str(te_dir)!r} is not this MiniCLIP's text tower "
                             f"(fingerprint {got}, expected {want})")  # fmt: skip
        model = CLIPModel(CLIPConfig.from_json_file(str(p / "config.json")))
        state = {k: v.float() for k, v in load_file(str(p / WEIGHTS)).items()}
        state.update({(k if k.startswith(TEXT_PREFIX) else TEXT_PREFIX + k): v.float() for k, v in text.items()})
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"clip {str(path)!r}: weights do not fit the config (missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]})")  # fmt: skip
        tok_dir = p if (p / "vocab.json").exists() or (p / "tokenizer.json").exists() else te_dir.parent / "tokenizer"
        return model.to(device).eval(), CLIPTokenizer.from_pretrained(tok_dir)
    except ValueError:
        raise
    except Exception as e:  # transformers/safetensors raise many types for broken folders
        raise ValueError(f"clip {str(p)!r} could not be loaded: {type(e).__name__}: {e}") from None

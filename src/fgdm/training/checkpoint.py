"""Compact, resumable checkpoints in safetensors only (never pickle).

A checkpoint holds the trained weights (fp32, or bf16 with ``checkpoint_dtype``) and their EMA (bf16), split into shards of at
most 15 MiB (so each comes back from a remote GPU machine in one piece), and ``state.json``
(step, config). The optimizer state is not kept (it would be several times larger): a resumed run
re-warms AdamW's moments with a short learning-rate warm-up.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MAX_SHARD = 15 * 2**20


def save_sharded(
    state: dict[str, torch.Tensor], folder: Path, prefix: str, dtype: torch.dtype = torch.bfloat16
) -> list[str]:
    """Save a state dict as ``prefix-00000.safetensors``, ... shards of at most 15 MiB."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        t = v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > MAX_SHARD:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    names = []
    for i, shard in enumerate(shards):
        name = f"{prefix}-{i:05d}.safetensors"
        save_file(shard, str(folder / name))
        names.append(name)
    return names


def load_sharded(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob(f"{prefix}-*.safetensors")):
        out.update(load_file(str(f)))
    if not out:
        raise ValueError(f"checkpoint {str(folder)!r} holds no {prefix} weights")
    return out


def save_checkpoint(out_dir: Path, step: int, model: torch.nn.Module, ema: torch.nn.Module | None, info: dict,
                    dtype: torch.dtype = torch.float32) -> Path:  # fmt: skip
    """Write ``out_dir/checkpoints/step-NNNNNNN`` atomically; keep only the newest two."""
    root = out_dir / "checkpoints"
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_sharded(model.state_dict(), tmp, "model", dtype)
    if ema is not None:
        save_sharded(ema.state_dict(), tmp, "ema", torch.bfloat16)
    (tmp / "state.json").write_text(json.dumps({"step": step, **info}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in sorted(root.glob("step-*"))[:-2]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted((out_dir / "checkpoints").glob("step-*"))
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: Path, model: torch.nn.Module, ema: torch.nn.Module | None) -> int:
    """Load weights (and EMA) into the modules; returns the step it was taken at.

    A checkpoint slimmed to its EMA (``model-*`` shards deleted to fit the committed-weights budget,
    docs/training.md) resumes with the model starting from the EMA weights.
    """
    state = json.loads((path / "state.json").read_text())

    def weights(prefix: str) -> dict[str, torch.Tensor] | None:
        if not any(path.glob(f"{prefix}-*.safetensors")):
            return None
        return {k: v.float() for k, v in load_sharded(path, prefix).items()}

    trained = weights("model")
    averaged = weights("ema") if ema is not None or trained is None else None  # read once, only if needed
    if trained is None and averaged is None:
        raise ValueError(f"checkpoint {str(path)!r} holds neither model nor ema weights")
    model.load_state_dict(trained if trained is not None else averaged)
    if ema is not None:
        ema.load_state_dict(averaged if averaged is not None else model.state_dict())
    return int(state["step"])

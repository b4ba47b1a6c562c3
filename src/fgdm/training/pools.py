"""Pre-rendered, in-memory pools of SceneWorld samples for the trainers.

A GPU step of a small model is far faster than rendering its batch: a 128-px scene renders at
~110/s per CPU core, and MiniCLIP consumes 512 of them in a few milliseconds. So the trainers
that see pixels (MiniVAE, MiniCLIP, the judge) render a pool once, in parallel processes, as
compact uint8 tensors, and then draw batches from memory (with augmentation where the trainer
wants it). Pools are a pure function of ``(n, seed, size, world)``.
"""

from __future__ import annotations

from multiprocessing import Pool

import numpy as np
import torch
from tqdm import tqdm

from ..world.conditions import normalize_depth
from ..world.dataset import CONDITIONS, make_sample
from ..world.scene import WorldConfig

FIELDS = ("image", "seg", "depth", "caption", *(f"cond_{c}" for c in CONDITIONS))


def _render(args) -> dict:
    i, seed, size, world, fields = args
    s = make_sample(i, seed=seed, size=size, config=WorldConfig.from_dict(world) if world else None)
    r = s.render
    conds = r.conditions() if any(f.startswith("cond_") for f in fields) else {}
    row = {}
    for f in fields:
        if f == "image":
            row[f] = r.image
        elif f == "seg":
            row[f] = r.seg
        elif f == "depth":  # normalised inverse depth in [0, 255]
            row[f] = (normalize_depth(r.depth) * 255).astype(np.uint8)
        elif f == "caption":
            row[f] = s.caption.text
        else:
            row[f] = conds[f.removeprefix("cond_")]
    return row


def render_pool(n: int, *, seed: int, size: int, workers: int = 1, world: dict | None = None,
                fields: tuple[str, ...] = ("image",), progress: bool = False) -> dict:  # fmt: skip
    """Render items ``0..n-1`` of the world with base ``seed``.

    Returns, per requested field: ``image`` and ``cond_<name>`` (n, 3, H, W) uint8 (the encoded
    3-channel maps), ``seg`` (n, H, W) uint8 class ids, ``depth`` (n, H, W) uint8 normalised
    inverse depth, ``caption`` a list of n strings.
    """
    bad = [f for f in fields if f not in FIELDS]
    if bad or not fields:
        raise ValueError(f"fields must be a non-empty subset of {list(FIELDS)}, got {list(fields)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"pool size must be a positive integer, got {n!r}")
    jobs = [(i, seed, size, world or {}, tuple(fields)) for i in range(n)]
    bar = tqdm(total=n, desc=f"render pool ({size}px)", disable=not progress, unit="scene")
    rows = []
    if workers > 1:
        with Pool(workers) as pool:
            for row in pool.imap(_render, jobs, chunksize=64):
                rows.append(row)
                bar.update()
    else:
        for j in jobs:
            rows.append(_render(j))
            bar.update()
    bar.close()
    out: dict = {}
    for f in fields:
        col = [r[f] for r in rows]
        if f == "caption":
            out[f] = col
            continue
        t = torch.from_numpy(np.stack(col))
        out[f] = t.permute(0, 3, 1, 2).contiguous() if t.dim() == 4 else t
    return out


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (.., 3, H, W) -> float in [-1, 1] (the diffusers convention)."""
    return x.float().div(127.5).sub(1.0)

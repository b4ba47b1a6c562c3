"""FG-DM attention distillation (paper eq. 7).

The frozen base UNet (teacher, no adapter) and the adapted factor (student) see the *same* noisy
latent, timestep and text; their head-averaged self- and cross-attention maps are resized
bilinearly to a common size and compared with KL(teacher || student), one distribution per query
position, averaged over queries, images and layers.

Differences from the authors' public code (REFERENCE.md), all deliberate:
- the student's maps keep their autograd graph, so the loss reaches the adapter (theirs were
  detached: the loss had no gradient path);
- self-attention maps are resized as 2-D grids over both the query and the key positions (theirs
  pooled flattened indices);
- the teacher sees exactly the student's noisy input (theirs saw upsampled, non-i.i.d. noise);
- each query's row is a softmax over its keys (theirs softmaxed pre-softmax logits over the
  whole map).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..attention import AttentionStore


def _grid(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, r*r) -> (N, C, size*size), bilinear on the r x r grid."""
    n, c, q = x.shape
    r = math.isqrt(q)
    if r * r != q:
        raise ValueError(f"attention map with {q} positions is not square")
    if r == size:
        return x
    g = F.interpolate(x.reshape(n, c, r, r).float(), size=(size, size), mode="bilinear", align_corners=False)
    return g.reshape(n, c, size * size)


def resize_attention(maps: torch.Tensor, kind: str, size: int) -> torch.Tensor:
    """Resize head-averaged maps (B, Q, K) to a ``size`` x ``size`` query grid; for self-attention
    the keys (also positions) too, renormalised so every row is still a distribution."""
    b, q, k = maps.shape
    m = maps.float()
    if kind == "self":
        m = _grid(m.reshape(b * q, 1, k), size).reshape(b, q, size * size)
        m = m / m.sum(-1, keepdim=True).clamp(min=1e-12)
    elif kind != "cross":
        raise ValueError(f"kind must be 'self' or 'cross', got {kind!r}")
    return _grid(m.transpose(1, 2), size).transpose(1, 2)  # (B, size^2, K')


def attention_distillation(teacher: AttentionStore, student: AttentionStore, *, size: int | None = None,
                           kinds: tuple[str, ...] = ("self", "cross"), eps: float = 1e-8) -> torch.Tensor:  # fmt: skip
    """Mean KL(teacher || student) over the layers both stores captured (their last call).

    ``size``: the common query-grid side (default: the largest captured layer resolution).
    """
    names = [n for n in student.select() if n in teacher.maps and student.layers[n].kind in kinds]
    if not names:
        raise ValueError("no attention maps shared by teacher and student; capture the same layers in both")
    size = size or max(student.layers[n].resolution for n in names)
    total = None
    for n in names:
        kind = student.layers[n].kind
        t = resize_attention(teacher.maps[n][-1].detach(), kind, size)
        s = resize_attention(student.maps[n][-1], kind, size)
        if t.shape != s.shape:
            raise ValueError(f"layer {n}: teacher map {tuple(t.shape)} and student map {tuple(s.shape)} differ")
        kl = (t * (t.clamp(min=eps).log() - s.clamp(min=eps).log())).sum(-1).mean()
        total = kl if total is None else total + kl
    return total / len(names)

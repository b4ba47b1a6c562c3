"""Selecting UNet attention layers, capturing their maps and modulating their logits."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_NAME = re.compile(r"^(down_blocks|mid_block|up_blocks)\.?(\d*)\..*\.(attn1|attn2)\.processor$")


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer of a UNet.

    Attributes:
        name: its processor key (``unet.attn_processors``).
        block: "down", "mid" or "up".
        level: resolution level, 0 = the latent resolution, 1 = half of it, ...
        resolution: the latent side at this layer for the UNet's ``sample_size``.
        kind: "self" or "cross".
    """

    name: str
    block: str
    level: int
    resolution: int
    kind: str


def list_attention_layers(unet: torch.nn.Module) -> list[AttentionLayer]:
    """Every self- and cross-attention layer of a diffusers ``UNet2DConditionModel``."""
    n_down = len(unet.config.block_out_channels)
    size = unet.config.sample_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    out = []
    for name in unet.attn_processors:
        m = _NAME.match(name)
        if m is None:
            continue
        group, idx, attn = m.groups()
        block = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}[group]
        level = {"down": int(idx or 0), "mid": n_down - 1, "up": n_down - 1 - int(idx or 0)}[block]
        out.append(AttentionLayer(name, block, level, size // 2**level, "self" if attn == "attn1" else "cross"))
    return out


@dataclass(frozen=True)
class LayerSelector:
    """Which layers to touch: by block, kind and (latent) resolution. ``resolutions=None`` = any."""

    blocks: tuple[str, ...] = ("down", "mid", "up")
    kinds: tuple[str, ...] = ("self", "cross")
    resolutions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        bad = [b for b in self.blocks if b not in ("down", "mid", "up")] + [
            k for k in self.kinds if k not in ("self", "cross")
        ]
        if bad:
            raise ValueError(f"unknown attention blocks/kinds {bad}; blocks are down/mid/up, kinds self/cross")

    def __call__(self, layer: AttentionLayer) -> bool:
        return (
            layer.block in self.blocks
            and layer.kind in self.kinds
            and (self.resolutions is None or layer.resolution in self.resolutions)
        )


class AttentionStore:
    """Captured attention maps with an explicit lifecycle: ``reset()`` before each step you read.

    Each capture is head-averaged, shape (B, Q, K): B the UNet batch (2x the images under CFG,
    unconditional half first), Q the query positions (H*W of the layer), K the keys (text tokens
    for cross-attention, positions for self-attention).

    Args:
        what: "probs" (after softmax) or "logits" (pre-softmax scores, scaled).
        grad: keep the autograd graph (for losses) or detach (for analysis).
        mode: "all" keeps every call since the last reset (per layer, in call order); "mean"
            keeps a running mean per layer (cheap, for visualising a whole sampling run).
    """

    def __init__(self, what: str = "probs", grad: bool = False, mode: str = "all") -> None:
        if what not in ("probs", "logits") or mode not in ("all", "mean"):
            raise ValueError(f"what must be probs|logits and mode all|mean, got {what!r}, {mode!r}")
        self.what, self.grad, self.mode = what, grad, mode
        self.layers: dict[str, AttentionLayer] = {}
        self.reset()

    def reset(self) -> None:
        self.maps: dict[str, list[torch.Tensor]] = {}
        self.counts: dict[str, int] = {}

    def add(self, layer: AttentionLayer, attn: torch.Tensor) -> None:
        """Record a (B, heads, Q, K) map for ``layer`` (averaged over heads here)."""
        if _in_backward():  # recomputation under gradient checkpointing: already recorded
            return
        m = attn.mean(1)
        if not self.grad:
            m = m.detach()
        self.layers[layer.name] = layer
        if self.mode == "all":
            self.maps.setdefault(layer.name, []).append(m)
        else:
            n = self.counts.get(layer.name, 0)
            prev = self.maps.get(layer.name)
            self.maps[layer.name] = [m.float() if prev is None else prev[0] + (m.float() - prev[0]) / (n + 1)]
        self.counts[layer.name] = self.counts.get(layer.name, 0) + 1

    def select(self, kind: str | None = None, blocks: tuple[str, ...] | None = None) -> list[str]:
        return [n for n, lay in self.layers.items() if n in self.maps and (kind is None or lay.kind == kind)
                and (blocks is None or lay.block in blocks)]  # fmt: skip

    def aggregate(
        self,
        kind: str = "cross",
        size: int | None = None,
        call: int = -1,
        blocks: tuple[str, ...] | None = None,
        batch: slice | None = None,
    ) -> torch.Tensor:
        """Average the selected layers' maps of one call into (B, size, size, K) (bilinear resize;
        default size: the largest map's, i.e. the latent side of the run that was captured)."""
        names = self.select(kind, blocks)
        if not names:
            raise ValueError(f"no {kind}-attention maps captured (blocks={blocks}); select those layers first")
        s = size or max(math.isqrt(self.maps[n][call].shape[1]) for n in names)
        outs = []
        for n in names:
            m = self.maps[n][call]
            if batch is not None:
                m = m[batch]
            b, q, k = m.shape
            r = math.isqrt(q)
            grid = m.transpose(1, 2).reshape(b, k, r, r).float()
            if r != s:
                grid = F.interpolate(grid, size=(s, s), mode="bilinear", align_corners=False)
            outs.append(grid.permute(0, 2, 3, 1))
        return torch.stack(outs).mean(0)


def _in_backward() -> bool:
    node = getattr(torch._C, "_current_autograd_node", None)
    return node is not None and node() is not None


Modulate = Callable[[AttentionLayer, torch.Tensor], torch.Tensor]


class CaptureProcessor:
    """A diffusers attention processor that computes attention explicitly, so that the logits can
    be modulated before the softmax and the maps captured. Numerically the same as SDPA."""

    def __init__(self, layer: AttentionLayer, store: AttentionStore | None = None, modulate: Modulate | None = None):
        self.layer, self.store, self.modulate = layer, store, modulate

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:  # fmt: skip
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, seq = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[:2]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        # (B, heads, Q|K, head_dim)
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        logits = (query @ key.transpose(-1, -2)) * (head_dim**-0.5)  # (B, heads, Q, K)
        if attention_mask is not None:
            logits = logits + attention_mask
        if self.modulate is not None:
            logits = self.modulate(self.layer, logits)
        if self.store is not None and self.store.what == "logits":
            self.store.add(self.layer, logits)
        probs = logits.float().softmax(-1).to(value.dtype)
        if self.store is not None and self.store.what == "probs":
            self.store.add(self.layer, probs)
        hidden_states = (probs @ value).transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def attention_control(unet: torch.nn.Module, select: LayerSelector | Callable[[AttentionLayer], bool],
                      store: AttentionStore | None = None, modulate: Modulate | None = None) -> Iterator[list[AttentionLayer]]:  # fmt: skip
    """Within the block, the selected layers capture into ``store`` and/or pass their logits
    through ``modulate``; every other layer keeps its processor. Restores all processors on exit.

    Under gradient checkpointing, call ``backward`` inside the block: the recomputed forward must
    run the same processors (recomputation is not recorded twice in the store).

    Yields the list of selected layers.
    """
    original = dict(unet.attn_processors)
    chosen = [lay for lay in list_attention_layers(unet) if select(lay)]
    procs = dict(original)
    for lay in chosen:
        procs[lay.name] = CaptureProcessor(lay, store, modulate)
    unet.set_attn_processor(procs)
    try:
        yield chosen
    finally:
        unet.set_attn_processor(original)

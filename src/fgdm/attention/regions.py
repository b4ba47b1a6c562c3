"""Map-guided cross-attention: two training-free ways to make a text-conditioned UNet draw a map's
classes in the map's regions.

- :func:`region_bias` (in the spirit of DenseDiffusion's attention modulation, cross-attention
  only): at every selected cross-attention layer the pre-softmax score of query pixel q for token k
  gains ``strength * (2 * share(c(k), q) - 1)``, where c(k) is the class token k names and
  share(c, q) the fraction of the layer's cell q that the map gives class c: +strength inside the
  class's region, -strength outside it, in between on its border.
- :class:`RegionalPrompts` / :func:`regional_prompts`: each pixel attends to a blend of the whole
  prompt and the prompts of the regions it lies in (e.g. "a photo of a dog" over the dog's region).

Both leave the rows of the batch after the prompts' rows (the unconditional half of
classifier-free guidance) as they are. ``scripts/map_text_probe.py`` measures them on SBPC's map
ceiling (docs/results.md, "Training-free map-guided cross-attention").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .control import AttentionLayer, LayerSelector, Modulate, list_attention_layers


def query_grid(q: int, h: int, w: int) -> tuple[int, int]:
    """The (rows, columns) of an attention layer's ``q`` query positions over a map of aspect h:w."""
    rh = math.isqrt(q * h // w)
    rw = q // max(rh, 1)
    if rh * rw != q:
        raise ValueError(f"an attention layer of {q} positions is not a grid of the map's aspect {h}:{w}")
    return rh, rw


def on_queries(grid: torch.Tensor, q: int) -> torch.Tensor:
    """(B, C, h, w) per-cell values on an attention layer's ``q`` query positions, (B, C, q): averaged
    over the cells a coarser layer's position covers, repeated on a finer layer's (same aspect)."""
    _, _, h, w = grid.shape
    rh, rw = query_grid(q, h, w)
    if (rh, rw) != (h, w):
        grid = F.adaptive_avg_pool2d(grid, (rh, rw)) if rh <= h else F.interpolate(grid, size=(rh, rw), mode="nearest")
    return grid.flatten(2)


def region_bias(shares: torch.Tensor, token_classes: torch.Tensor, strength: float) -> Modulate:
    """A ``modulate`` for :func:`~fgdm.attention.attention_control`.

    Args:
        shares: (B, C, h, w) per-cell class shares of each sample's map (e.g.
            :func:`~fgdm.models.factors.class_fractions`), C the classes that ``token_classes``
            indexes.
        token_classes: (B, C, K) float, 1 where token k of sample b's prompt names class c.
        strength: the logit bias at the centre of a region (0 turns the modulation off).

    The first B rows of the UNet batch are biased (the prompts' rows); rows after them, when the
    batch is larger (the unconditional rows of guidance), are left as they are. A layer's cells are
    ``shares`` pooled (or repeated) to its resolution.
    """
    if shares.ndim != 4 or token_classes.ndim != 3 or shares.shape[:2] != token_classes.shape[:2]:
        raise ValueError(f"region_bias: shares (B, C, h, w) and token_classes (B, C, K) must agree on B and C, "
                         f"got {tuple(shares.shape)} and {tuple(token_classes.shape)}")  # fmt: skip
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"region_bias: strength must be a finite number >= 0, got {strength!r}")
    named = token_classes.sum((0, 2)) > 0  # only the classes some prompt names matter
    shares, token_classes = shares[:, named].float(), token_classes[:, named].float()
    b = shares.shape[0]
    cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def bias(q: int, device: torch.device) -> torch.Tensor:
        if (q, device) not in cache:
            sign = 2 * on_queries(shares, q) - 1  # (B, C, Q)
            cache[q, device] = (strength * torch.einsum("bcq,bck->bqk", sign, token_classes)).to(device)
        return cache[q, device]

    def modulate(layer: AttentionLayer, logits: torch.Tensor) -> torch.Tensor:
        if strength == 0 or not named.any() or layer.kind != "cross":
            return logits
        if logits.shape[0] < b:
            raise ValueError(f"region_bias: the UNet batch has {logits.shape[0]} rows, the maps {b}")
        add = bias(logits.shape[2], logits.device).to(logits.dtype)[:, None, :, : logits.shape[3]]
        return torch.cat([logits[:b] + add, logits[b:]])

    return modulate


class RegionalPrompts:
    """A cross-attention processor wrapper: each pixel of the prompts' rows attends to a blend of
    the whole prompt and the prompts of the regions it lies in.

    ``contexts``: (B, M, T, D) text encodings of M region prompts per sample (e.g. "a photo of a
    dog" for the dog's region); ``weights``: (B, M, h, w), each region prompt's weight per cell
    (e.g. its class's share), summing to at most 1 per cell; the whole prompt takes the rest. The
    processor's output is affine in its attention output, so blending outputs is blending
    attentions. Self-attention and the rows after the first B (guidance's unconditional rows) run
    as they did.
    """

    def __init__(self, processor, contexts: torch.Tensor, weights: torch.Tensor) -> None:
        if contexts.ndim != 4 or weights.ndim != 4 or contexts.shape[:2] != weights.shape[:2]:
            raise ValueError(f"RegionalPrompts: contexts (B, M, T, D) and weights (B, M, h, w) must agree on B and M, "
                             f"got {tuple(contexts.shape)} and {tuple(weights.shape)}")  # fmt: skip
        if weights.min() < 0 or weights.sum(1).max() > 1 + 1e-5:
            raise ValueError("RegionalPrompts: weights must be >= 0 and sum to at most 1 per cell")
        self.processor, self.contexts, self.weights = processor, contexts, weights.float()
        self.cache: dict[int, torch.Tensor] = {}

    def _weights(self, q: int) -> torch.Tensor:
        if q not in self.cache:
            self.cache[q] = on_queries(self.weights, q)[..., None]  # (B, M, Q, 1)
        return self.cache[q]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        out = self.processor(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        if encoder_hidden_states is None or hidden_states.ndim != 3:
            return out
        b, m = self.contexts.shape[:2]
        q = hidden_states.shape[1]
        rows = hidden_states[:b].repeat_interleave(m, 0)
        ctx = self.contexts.flatten(0, 1).to(encoder_hidden_states)
        regional = self.processor(attn, rows, ctx, *args, **kwargs).unflatten(0, (b, m))  # (B, M, Q, C)
        wt = self._weights(q).to(out)
        mixed = (1 - wt.sum(1)) * out[:b] + (wt * regional).sum(1)
        return torch.cat([mixed, out[b:]])


@contextmanager
def regional_prompts(unet: torch.nn.Module, contexts: torch.Tensor, weights: torch.Tensor,
                     select: LayerSelector | None = None) -> Iterator[list[AttentionLayer]]:  # fmt: skip
    """Within the block, the UNet's selected cross-attention layers (default: all) run
    :class:`RegionalPrompts` around their own processors; every processor is restored on exit."""
    select = select or LayerSelector(kinds=("cross",))
    original = dict(unet.attn_processors)
    chosen = [lay for lay in list_attention_layers(unet) if select(lay) and lay.kind == "cross"]
    procs = dict(original)
    for lay in chosen:
        procs[lay.name] = RegionalPrompts(original[lay.name], contexts, weights)
    unet.set_attn_processor(procs)
    try:
        yield chosen
    finally:
        unet.set_attn_processor(original)

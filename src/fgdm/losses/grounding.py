"""TokenCompose's grounding losses on cross-attention (REFERENCE.md §2).

For each token i that names a class with a non-empty mask M_i in its sample's label map, at every
captured cross-attention layer (head-averaged probabilities A, one distribution over the tokens per
query position u):

- ``L_token = mean_i (1 - sum_{u in M_i} A_iu / sum_u A_iu)^2``: the token's attention mass that
  falls inside its class's region;
- ``L_pixel = BCE(A_i, M_i)`` over those tokens and every position, in fp32 (BCE is not
  autocast-safe).

M_i on a layer's grid (of the map's aspect) is "any pixel of the class in the cell" (the class's
share of the cell > 0: TokenCompose resizes bilinearly and keeps > 0). Both losses are averaged over
the layers the store holds (TokenCompose sums them, with the weights scaled to suit; here the weights
do not depend on how many layers are selected). The public code ran one image per batch; any batch
works here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import AttentionStore
from ..attention.regions import query_grid
from ..models.factors import class_fractions


def token_masks(token_classes: torch.Tensor, shares: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's region on an ``(h, w)`` grid.

    Args:
        token_classes: (B, K) long, the class id token k of sample b names, or -1 for none.
        shares: (B, C, h, w) per-cell class shares of each sample's map
            (:func:`~fgdm.models.factors.class_fractions`).

    Returns:
        masks (B, K, h*w) float, 1 where token k's class is in the cell; valid (B, K) bool, the
        tokens that name a class with a non-empty region (the only ones the losses read).
    """
    if token_classes.ndim != 2 or shares.ndim != 4 or token_classes.shape[0] != shares.shape[0]:
        raise ValueError(f"token_masks: token_classes (B, K) and shares (B, C, h, w) must agree on B, "
                         f"got {tuple(token_classes.shape)} and {tuple(shares.shape)}")  # fmt: skip
    present = (shares > 0).flatten(2).float()  # (B, C, h*w)
    named = token_classes >= 0
    idx = token_classes.clamp(min=0).long()
    masks = torch.gather(present, 1, idx[..., None].expand(-1, -1, present.shape[-1])) * named[..., None]
    return masks, named & (masks.sum(-1) > 0)


def grounding_losses(store: AttentionStore, token_classes: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(L_token, L_pixel) over the cross-attention layers ``store`` captured in its last call.

    Args:
        store: captured with ``grad=True`` for the losses to train what produced the queries.
        token_classes: (B, K) long, each token's class id or -1 (``BaseModel.token_class_ids``).
        labels: (B, H, W) integer class-id maps (void 255), the samples' segmentation.

    The first B rows of the UNet batch are the samples; rows after them (e.g. the unconditional
    half under guidance) are not read. Both losses are zero-valued tensors, still attached to the
    graph, when no token names a visible class.
    """
    names = store.select("cross")
    if not names:
        raise ValueError("grounding_losses: no cross-attention maps captured; select cross-attention layers")
    b = token_classes.shape[0]
    if token_classes.ndim != 2 or labels.ndim != 3 or labels.shape[0] != b:
        raise ValueError(f"grounding_losses: labels {tuple(labels.shape)} and token_classes "
                         f"{tuple(token_classes.shape)} must be (B, H, W) and (B, K), one row per sample")  # fmt: skip
    l_tok, l_pix, cache = [], [], {}
    for n in names:
        if store.maps[n][-1].shape[0] < b:
            raise ValueError(f"grounding_losses: layer {n} captured a batch of {store.maps[n][-1].shape[0]} rows, "
                             f"the samples are {b}")  # fmt: skip
        a = store.maps[n][-1][:b].float()  # (B, Q, K)
        q, k = a.shape[1], a.shape[2]
        if q not in cache:  # the layer's grid, of the map's aspect
            grid = query_grid(q, *labels.shape[-2:])
            cache[q] = token_masks(token_classes[:, :k], class_fractions(labels, grid).to(a.device))
        masks, valid = cache[q]
        if not valid.any():
            zero = a.sum() * 0
            l_tok.append(zero)
            l_pix.append(zero)
            continue
        at = a.transpose(1, 2)  # (B, K, Q)
        inside = (at * masks).sum(-1) / at.sum(-1).clamp(min=1e-8)
        l_tok.append(((1 - inside[valid]) ** 2).mean())
        l_pix.append(F.binary_cross_entropy(at[valid].clamp(1e-6, 1 - 1e-6), masks[valid]))
    return torch.stack(l_tok).mean(), torch.stack(l_pix).mean()

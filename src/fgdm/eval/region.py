"""Region fidelity for visual-condition methods (SOW/COW): is the given condition kept in its box?"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _crop(img: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    x0, y0, x1, y1 = box
    h, w = img.shape[-2:]
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"box {box} is not inside the {w}x{h} image")
    return img[..., y0:y1, x0:x1]


def region_fidelity(generated: torch.Tensor, condition: torch.Tensor, box: tuple[int, int, int, int], *,
                    feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    segment: Callable[[torch.Tensor], set[str]] | None = None,
                    category: str | None = None) -> dict:  # fmt: skip
    """Compare ``generated`` (3, H, W in [0, 1]) inside ``box`` with ``condition`` (3, h, w: the
    visual condition that was placed there).

    Returns PSNR and SSIM (torchmetrics) of the crop against the condition, the cosine feature
    distance if ``feature_fn`` is given, and whether ``segment`` (the judge) still finds
    ``category`` in the crop.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    crop = _crop(generated, box)[None].float()
    cond = condition[None].float()
    if cond.shape[-2:] != crop.shape[-2:]:
        cond = F.interpolate(cond, size=crop.shape[-2:], mode="bilinear", align_corners=False)
    out = {
        "psnr": float(peak_signal_noise_ratio(crop, cond, data_range=1.0)),
        "ssim": float(structural_similarity_index_measure(crop, cond, data_range=1.0)),
    }
    if feature_fn is not None:
        with torch.no_grad():
            a, b = feature_fn(crop), feature_fn(cond)
        out["feature_distance"] = float(1 - F.cosine_similarity(a.double(), b.double(), dim=-1).mean())
    if segment is not None:
        if category is None:
            raise ValueError("category is required when segment is given")
        out["category_kept"] = category in segment(crop[0])
    return out

"""Distribution and alignment metrics in a feature space (MiniCLIP's image tower in practice).

- Fréchet distance: torchmetrics' FID with a custom feature extractor (no hand-rolled matrix
  square root).
- Precision / recall of generative models (Kynkäänniemi et al. 2019): k-NN manifolds.
- Diversity: mean pairwise cosine distance between samples of one prompt (an LPIPS stand-in).
- CLIP score: 100 x max(cos(image, text), 0), averaged (Hessel et al. 2021, w = 1 folded in).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


class _Features(torch.nn.Module):
    """Adapts an image -> feature callable to torchmetrics' FID interface (float images in [0, 1])."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], dim: int) -> None:
        super().__init__()
        self.fn, self.num_features = fn, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x.float()).double()


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, feature_fn: Callable[[torch.Tensor], torch.Tensor],
                     batch_size: int = 64) -> float:  # fmt: skip
    """FID between two image sets (N, 3, H, W) in [0, 1] with ``feature_fn`` as the extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"Fréchet distance needs >= 2 images per set, got {len(real)} and {len(fake)}")
    with torch.no_grad():
        dim = feature_fn(real[:1].float()).shape[-1]
    fid = FrechetInceptionDistance(feature=_Features(feature_fn, dim), normalize=True, reset_real_features=True)
    for imgs, is_real in ((real, True), (fake, False)):
        for i in range(0, len(imgs), batch_size):
            fid.update(imgs[i : i + batch_size], real=is_real)
    return float(fid.compute())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets (N, D)."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    real, fake = real.double(), fake.double()

    def radii(x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # +1: the point itself

    def coverage(ref: torch.Tensor, r: torch.Tensor, query: torch.Tensor) -> float:
        return float((torch.cdist(query, ref) <= r[None]).any(dim=1).double().mean())

    return {"precision": coverage(real, radii(real), fake), "recall": coverage(fake, radii(fake), real)}


def diversity(features: torch.Tensor) -> float:
    """Mean pairwise cosine distance between samples (N >= 2) of one prompt."""
    if len(features) < 2:
        raise ValueError("diversity needs at least 2 samples")
    f = F.normalize(features.double(), dim=-1)
    sim = f @ f.T
    n = len(f)
    return float((1 - sim)[~torch.eye(n, dtype=torch.bool)].mean())


def next_prompt_texts(text_features: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """Text features re-paired for a shuffled CLIP score: rows come in ``groups`` (the images of one
    prompt each, all with that prompt's text); every image gets the *next* prompt's text (the last
    the first's). CLIP score against these is its value for a caption the image was not made for."""
    starts = [sum(groups[:i]) for i in range(len(groups))]
    return torch.cat([text_features[starts[(p + 1) % len(groups)]].expand(k, -1) for p, k in enumerate(groups)])


def clip_score(image_features: torch.Tensor, text_features: torch.Tensor) -> float:
    """Mean of 100 x max(cos(image_i, text_i), 0) over matched pairs."""
    if image_features.shape != text_features.shape:
        raise ValueError(f"feature shapes differ: {tuple(image_features.shape)} vs {tuple(text_features.shape)}")
    cos = F.cosine_similarity(image_features.double(), text_features.double(), dim=-1)
    return float((100 * cos.clamp(min=0)).mean())

"""``fgdm eval palette-decode``: how well segmentation maps survive blur, resizing and noise.

Each SceneWorld segmentation map is palette-encoded, perturbed, and decoded two ways, side by
side: with :func:`~fgdm.world.conditions.decode_segmentation` and with the naive decoder the
FG-DM public code uses (nearest palette colour inside a tolerance box, then the minimum-area
threshold, no border handling). Reported per perturbation: pixel accuracy against the
nearest-resized truth, the rate of images whose decoded class set equals the true one (classes
above the minimum area), and the mean numbers of invented and lost classes per image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from ..world.categories import VOID_ID
from ..world.conditions import class_areas, decode_segmentation, encode_segmentation, resize_labels
from ..world.dataset import make_sample
from ..world.palette import PALETTE

_PAL = np.array(PALETTE, dtype=np.int32)


def naive_decode(rgb: np.ndarray, box: int = 28, min_area: float = 0.003) -> np.ndarray:
    """Nearest palette colour within a +-``box`` per-channel box, else void; then drop small classes."""
    flat = rgb.reshape(-1, 3).astype(np.int32)
    out = np.full(len(flat), VOID_ID, np.uint8)
    diff = np.abs(flat[:, None] - _PAL[None]).max(-1)  # (N, C) Chebyshev distance
    best = diff.argmin(1)
    ok = diff[np.arange(len(flat)), best] <= box
    out[ok] = best[ok]
    out = out.reshape(rgb.shape[:2])
    for k, a in class_areas(out).items():
        if a < min_area:
            out[out == k] = VOID_ID
    return out


def _perturbations(rgb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    s = rgb.shape[0]
    im = Image.fromarray(rgb)
    noisy = np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8)
    down_up = np.asarray(im.resize((s // 2, s // 2), Image.BILINEAR).resize((s, s), Image.BILINEAR))
    return {
        "exact": rgb,
        "blur 1.0": np.asarray(im.filter(ImageFilter.GaussianBlur(1.0))),
        "blur 2.0": np.asarray(im.filter(ImageFilter.GaussianBlur(2.0))),
        "bilinear x0.5": np.asarray(im.resize((s // 2, s // 2), Image.BILINEAR)),
        "bilinear x2": np.asarray(im.resize((2 * s, 2 * s), Image.BILINEAR)),
        "noise 10": noisy,
        "down-up + noise 10": np.clip(down_up + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8),
    }


def evaluate_palette_decode(
    n: int = 100, size: int = 128, seed: int = 0, min_area: float = 0.003, progress: bool = True
) -> dict:
    """Run the comparison on ``n`` SceneWorld maps; returns {perturbation: {decoder: metrics}}."""
    rng = np.random.default_rng(seed)
    acc: dict[str, dict[str, list]] = {}
    for i in tqdm(range(n), desc="palette-decode", disable=not progress):
        seg = make_sample(i, seed=seed, size=size).render.seg
        truth_classes = set(class_areas(seg, min_area))
        for name, rgb in _perturbations(encode_segmentation(seg), rng).items():
            truth = resize_labels(seg, rgb.shape[0]) if rgb.shape[0] != size else seg
            for dec_name, fn in (("fgdm", decode_segmentation), ("naive box", naive_decode)):
                dec = fn(rgb, min_area=min_area)
                got = set(class_areas(dec))
                m = acc.setdefault(name, {}).setdefault(dec_name, [])
                m.append((float((dec == truth).mean()), got == truth_classes,
                          len(got - set(class_areas(seg))), len(truth_classes - got)))  # fmt: skip
    out = {}
    for name, decs in acc.items():
        out[name] = {}
        for dec_name, rows in decs.items():
            a = np.array(rows, dtype=np.float64)
            out[name][dec_name] = {
                "pixel_accuracy": round(float(a[:, 0].mean()), 4),
                "class_set_exact": round(float(a[:, 1].mean()), 4),
                "invented_per_image": round(float(a[:, 2].mean()), 3),
                "lost_per_image": round(float(a[:, 3].mean()), 3),
            }
    return {"n": n, "size": size, "seed": seed, "min_area": min_area, "results": out}


def markdown_table(result: dict) -> str:
    lines = ["| perturbation | decoder | pixel acc. | class set exact | invented / img | lost / img |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, decs in result["results"].items():
        for dec_name, m in decs.items():
            lines.append(f"| {name} | {dec_name} | {m['pixel_accuracy']:.4f} | {m['class_set_exact']:.3f} | "
                         f"{m['invented_per_image']:.3f} | {m['lost_per_image']:.3f} |")  # fmt: skip
    return "\n".join(lines)

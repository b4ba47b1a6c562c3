"""Condition maps: encoders to the 3-channel images the papers use, and tolerant decoders back.

Conventions (documented in docs/world.md):

- segmentation: class ids (uint8, ``VOID_ID`` = 255) painted with the fixed palette in
  ``palette.py``; decoding takes the nearest palette colour within ``tolerance``, resolves border
  and uncertain pixels from their neighbours, and drops classes smaller than ``min_area``.
- depth: metric depth (larger = farther) is turned into normalised *inverse* depth ("disparity",
  as MiDaS outputs: near = 1 = white, far = 0 = black), min-max per image, replicated to 3 channels.
- normals: from the normalised inverse depth ``d`` by Sobel derivatives per image width,
  ``n = normalise(-dd/dx, -dd/dy, 1)``, stored as ``n * 127.5 + 127.5``.
- sketch: soft edges in [0, 1] (1 = edge), white on black, replicated to 3 channels.

Label maps are resized with nearest neighbour only (:func:`resize_labels`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .categories import CATEGORIES, NUM_CLASSES, VOID_ID
from .palette import PALETTE, VOID_COLOR

_PALETTE = np.array(PALETTE, dtype=np.int32)  # (C, 3)
_PAL_F = _PALETTE.astype(np.float64)
_PAL_SQ = (_PAL_F * _PAL_F).sum(1)  # (C,) squared norms
_PAL_D2 = ((_PAL_F[:, None] - _PAL_F[None]) ** 2).sum(-1)  # (C, C) squared distances between colours
_LUT = np.zeros((256, 3), dtype=np.uint8)
_LUT[: len(PALETTE)] = PALETTE
_LUT[VOID_ID] = VOID_COLOR
assert len(PALETTE) == NUM_CLASSES


def palette_lut() -> np.ndarray:
    """(256, 3) uint8 lookup table: class id -> colour (unused ids and void are black)."""
    return _LUT.copy()


def _check_hw3(rgb: np.ndarray, name: str) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"{name} must be an (H, W, 3) image, got shape {rgb.shape}")
    return rgb[..., :3]


# ----------------------------------------------------------------------------- segmentation


def encode_segmentation(seg: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 palette image."""
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise ValueError(f"seg must be an (H, W) label map, got shape {seg.shape}")
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise ValueError(f"seg holds ids outside 0-255 (min {seg.min()}, max {seg.max()})")
    return _LUT[seg.astype(np.int64)]


def _box_votes(labels: np.ndarray, valid: np.ndarray, classes: np.ndarray, radius: int = 1) -> np.ndarray:
    """Counts of each class among valid pixels in the (2r+1)^2 window: (K, H, W)."""
    h, w = labels.shape
    onehot = (labels[None] == classes[:, None, None]) & valid[None]
    # a box sum is separable: sums over the window along x, then along y
    k = 2 * radius + 1
    padded = np.pad(onehot.astype(np.int16), ((0, 0), (radius, radius), (radius, radius)))
    rows = padded[:, :, :w].copy()
    for dx in range(1, k):
        rows += padded[:, :, dx : dx + w]
    votes = rows[:, :h].copy()
    for dy in range(1, k):
        votes += rows[:, dy : dy + h]
    return votes


def _fill_from_neighbours(labels: np.ndarray, valid: np.ndarray, max_iter: int = 64) -> np.ndarray:
    """Give every invalid pixel the majority label of its valid 3x3 neighbours, growing inwards."""
    labels, valid = labels.copy(), valid.copy()
    for _ in range(max_iter):
        todo = ~valid
        if not todo.any():
            break
        classes = np.unique(labels[valid])
        if classes.size == 0:
            break
        ys, xs = np.nonzero(todo)
        votes = _box_votes(labels, valid, classes)[:, ys, xs]  # (K, pixels to fill)
        take = votes.max(0) > 0
        if not take.any():
            break
        labels[ys[take], xs[take]] = classes[votes[:, take].argmax(0)]
        valid[ys[take], xs[take]] = True
    return labels


def _opened(labels: np.ndarray, valid: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Pixels that survive a 3x3 morphological opening of their own class (i.e. are not thin)."""
    h, w = labels.shape
    onehot = (labels[None] == classes[:, None, None]) & valid[None]
    padded = np.pad(onehot, ((0, 0), (1, 1), (1, 1)), mode="edge")
    eroded = np.ones_like(onehot)
    for dy in range(3):
        for dx in range(3):
            eroded &= padded[:, dy : dy + h, dx : dx + w]
    padded = np.pad(eroded, ((0, 0), (1, 1), (1, 1)))
    dilated = np.zeros_like(onehot)
    for dy in range(3):
        for dx in range(3):
            dilated |= padded[:, dy : dy + h, dx : dx + w]
    return (onehot & dilated).any(0)


def _unmix(x: np.ndarray, anchors_a: np.ndarray, has_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Explain colours ``x`` (N, 3) as mixes ``(1 - t) * A + t * P`` of a neighbouring class A
    (``anchors_a``: (N, M) class ids, ``has_a``: (N, M) which are real) and any palette colour P.

    Returns (distance to the best mix, its A, its P, its t) as arrays over N.
    """
    best = (np.full(len(x), np.inf), np.zeros(len(x), np.int64), np.zeros(len(x), np.int64), np.zeros(len(x)))
    rows = np.arange(len(x))
    for m in range(anchors_a.shape[1]):
        # |x - (a + t (p - a))|^2 expanded, so that every term is an (N, C) product, not (N, C, 3)
        a = _PAL_F[anchors_a[:, m]]  # (N, 3)
        xa = x - a
        g = xa @ _PAL_F.T - (xa * a).sum(1, keepdims=True)  # (N, C): <x - a, p - a>
        pp = _PAL_D2[anchors_a[:, m]]  # (N, C): |p - a|^2
        t = np.clip(g / np.maximum(pp, 1e-9), 0, 1)
        d = np.sqrt(np.maximum((xa * xa).sum(1, keepdims=True) - t * (2 * g - t * pp), 0))
        d = np.round(d, 6)  # colours on one line through the palette tie exactly, as they should
        d[~has_a[:, m]] = np.inf
        p = d.argmin(1)
        dm = d[rows, p]
        better = dm < best[0]
        best = (
            np.where(better, dm, best[0]),
            np.where(better, anchors_a[:, m], best[1]),
            np.where(better, p, best[2]),
            np.where(better, t[rows, p], best[3]),
        )
    return best


def _unblend(
    labels: np.ndarray, colors: np.ndarray, dist_own: np.ndarray, valid: np.ndarray, tolerance: float, radius: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Relabel pixels whose colour is a blend across a border rather than a class colour.

    Colours blended across a border between classes A and B can land near a third palette colour
    C (the palette is a grid, so mid-points often are palette colours), or near none at all (a
    thin object whose own colour never appears unmixed). A and B are the two most frequent
    *other* classes among "anchor" pixels (exact colours, or not thin) within ``radius``. A pixel
    that is not an exact palette colour is explained as a mix ``(1 - t) A + t B``; a thin or
    uncertain one also as ``(1 - t) A + t P`` with P any palette colour (the thin object whose
    colour was never seen pure). It takes the dominant class of the best mix when that mix is
    within ``tolerance`` and explains its colour better (by 2) than its own class does.
    Exact palette colours are never changed, so an exactly encoded map decodes exactly.

    Returns the labels and the updated validity mask.
    """
    classes = np.unique(labels[valid])
    if classes.size == 0:
        return labels, valid
    thick = _opened(labels, valid, classes)
    anchors = valid & ((dist_own <= 2.0) | thick)
    cand = (dist_own > 0.5) & (dist_own < 3 * tolerance)
    if not cand.any():
        return labels, valid
    votes = _box_votes(labels, anchors, classes, radius=radius)  # (K, H, W)
    ys, xs = np.nonzero(cand)
    n = len(ys)
    v = votes[:, ys, xs].astype(np.int32)  # (K, N)
    own_valid = valid[ys, xs]
    own_idx = np.searchsorted(classes, labels[ys, xs]).clip(0, len(classes) - 1)
    v[own_idx[own_valid], np.arange(n)[own_valid]] = 0  # a pixel's own class cannot explain it
    vt = np.ascontiguousarray(v.T)  # (N, K)
    # the two most frequent classes, ties to the lower index (a stable sort's first two, found by argmax)
    first = vt.argmax(1)
    order = first[:, None]  # (N, 1) when the map has one class
    if vt.shape[1] > 1:
        vt2 = vt.copy()
        vt2[np.arange(n), first] = -1
        order = np.stack([first, vt2.argmax(1)], 1)  # (N, 2)
    has = np.take_along_axis(vt, order, 1) > 0
    if order.shape[1] == 1:  # no second class: the mix is with the one class itself
        order, has = np.repeat(order, 2, axis=1), np.concatenate([has, np.zeros_like(has)], axis=1)
    keep = has[:, 0]  # pixels with at least one other class nearby
    ys, xs, order, has, own_valid = ys[keep], xs[keep], order[keep], has[keep], own_valid[keep]
    x = colors[ys, xs].astype(np.float64)
    # (1) a mix of the two neighbouring classes
    a_id, b_id = classes[order[:, 0]], np.where(has[:, 1], classes[order[:, 1]], classes[order[:, 0]])
    ca, ab = _PAL_F[a_id], _PAL_F[b_id] - _PAL_F[a_id]
    t = np.clip(((x - ca) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-9), 0, 1)
    best_d = np.linalg.norm(x - (ca + t[:, None] * ab), axis=1)
    best_new = np.where(t < 0.5, a_id, b_id)
    # (2) thin or uncertain pixels: a neighbouring class mixed with any palette colour
    loose = ~thick[ys, xs] | ~own_valid
    if loose.any():
        d2, a2, p2, t2 = _unmix(x[loose], classes[order[loose]], has[loose])
        better = d2 < best_d[loose]
        idx = np.nonzero(loose)[0][better]
        best_d[idx] = d2[better]
        best_new[idx] = np.where(t2[better] < 0.5, a2[better], p2[better])
    own_d = np.where(own_valid, dist_own[ys, xs], np.inf)
    change = (best_d <= tolerance) & (best_d + 2.0 < own_d)
    out, ok = labels.copy(), valid.copy()
    out[ys[change], xs[change]] = best_new[change].astype(np.uint8)
    ok[ys[change], xs[change]] = True
    return out, ok


def _nearest_colours(rgb: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per distinct colour of an (H, W, 3) map: (the map rounded to int32, each pixel's index into
    the distinct colours, each colour's nearest palette class, its distance to it, its distance to
    the void colour) — computed once per colour, not per pixel."""
    q = np.clip(np.rint(rgb.astype(np.float64)), 0, 255).astype(np.int32)
    key = (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]
    uniq, inv = np.unique(key.ravel(), return_inverse=True)
    ucol = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], 1)
    uf = ucol.astype(np.float64)
    # squared distances expanded into a matrix product: exact, as every term is an integer
    d2 = (uf * uf).sum(1, keepdims=True) - 2 * uf @ _PAL_F.T + _PAL_SQ[None]  # (U, C)
    nearest = d2.argmin(1)
    dist = np.sqrt(d2[np.arange(len(uniq)), nearest])
    dvoid = np.linalg.norm(ucol - np.array(VOID_COLOR), axis=1)
    return q, inv, nearest, dist, dvoid


def palette_fit(rgb: np.ndarray, *, tolerance: float = 30.0) -> float:
    """The share of a palette map's pixels whose colour lies within ``tolerance`` (Euclidean RGB)
    of a palette colour or of the void colour: how much of a *generated* segmentation map
    :func:`decode_segmentation` reads directly rather than by guessing from blends and neighbours.

    1 for an exactly painted map; about 0.96 for a real map after a round trip through the shipped
    VAE; a sampled map whose colours drift between palette entries scores low (docs/results.md).
    """
    rgb = _check_hw3(rgb, "rgb")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    _, inv, _, dist, dvoid = _nearest_colours(rgb)
    return _fit(inv, dist, dvoid, tolerance)


def _fit(inv: np.ndarray, dist: np.ndarray, dvoid: np.ndarray, tolerance: float) -> float:
    return float((np.minimum(dist, dvoid) <= tolerance)[inv].mean())


def decode_segmentation(rgb: np.ndarray, *, tolerance: float = 30.0, min_area: float = 0.003) -> np.ndarray:
    """Palette image -> (H, W) uint8 class ids, tolerant of blended and resized colours.

    Steps: (1) nearest palette colour, accepted within ``tolerance``; colours as close to black
    are void, anything else is uncertain; (2) pixels whose colour is a blend of the two classes
    around them go to one of those classes (see :func:`_unblend`); (3) uncertain pixels take
    the majority label of their neighbours, growing inwards; (4) classes covering less than
    ``min_area`` are dropped and refilled from their neighbours.

    Args:
        rgb: (H, W, 3) palette-coloured map (uint8 or float in 0-255), possibly generated,
            blurred or bilinearly resized.
        tolerance: max Euclidean RGB distance to a palette colour (half the palette's minimum
            spacing of 60 by default).
        min_area: a fraction of the image if < 1, else a pixel count; 0 keeps every class.
            The default (0.3%) is below the smallest SceneWorld object (about 0.45% of the image)
            and above the specks that blending leaves.

    Returns:
        (H, W) uint8 class ids; ``VOID_ID`` where the map was black (or nothing could be decoded).
        An exactly encoded map decodes exactly (with ``min_area=0``).
    """
    return decode_segmentation_fit(rgb, tolerance=tolerance, min_area=min_area)[0]


def decode_segmentation_fit(rgb: np.ndarray, *, tolerance: float = 30.0,
                            min_area: float = 0.003) -> tuple[np.ndarray, float]:  # fmt: skip
    """:func:`decode_segmentation` and :func:`palette_fit` of one map, sharing their work."""
    rgb = _check_hw3(rgb, "rgb")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    h, w = rgb.shape[:2]
    q, inv, nearest, dist, dvoid = _nearest_colours(rgb)
    fit = _fit(inv, dist, dvoid, tolerance)

    labels = nearest[inv].reshape(h, w).astype(np.uint8)
    dist_px = dist[inv].reshape(h, w)
    valid = dist_px <= tolerance
    is_void = ~valid & (dvoid[inv].reshape(h, w) <= tolerance)
    labels, valid = _unblend(labels, q, dist_px, valid, tolerance)
    labels = _fill_from_neighbours(labels, valid)
    thresh = min_area * h * w if min_area < 1 else min_area
    if thresh > 0:
        ids, counts = np.unique(labels[~is_void], return_counts=True)
        small = ids[counts < thresh]
        if small.size:
            keep = ~np.isin(labels, small) & ~is_void
            labels = _fill_from_neighbours(labels, keep)
            labels[np.isin(labels, small)] = VOID_ID  # nothing to fill from
    labels[is_void] = VOID_ID
    return labels, fit


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-neighbour connected components of a boolean (H, W) mask: (int32 labels numbered from 1,
    0 outside the mask; their count)."""
    todo = np.array(mask, dtype=bool)  # a copy: cleared as pixels are labelled
    if todo.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {todo.shape}")
    h, w = todo.shape
    out = np.zeros((h, w), np.int32)
    n = 0
    for y, x in zip(*np.nonzero(todo), strict=True):
        if not todo[y, x]:
            continue
        n += 1
        stack = [(y, x)]
        todo[y, x] = False
        while stack:
            cy, cx = stack.pop()
            out[cy, cx] = n
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < h and 0 <= nx < w and todo[ny, nx]:
                    todo[ny, nx] = False
                    stack.append((ny, nx))
    return out, n


def thing_instances(seg: np.ndarray) -> np.ndarray:
    """Connected components (4-neighbour) of every thing class, numbered from 1."""
    seg = np.asarray(seg)
    out = np.zeros(seg.shape, np.int32)
    nxt = 0
    for cid in np.unique(seg):
        if cid == VOID_ID or not CATEGORIES[int(cid)].is_thing:
            continue
        lab, n = connected_components(seg == cid)
        out[lab > 0] = lab[lab > 0] + nxt
        nxt += n
    return out


def largest_component_areas(seg: np.ndarray, min_area: float = 0.0) -> dict[int, float]:
    """Class id -> area fraction of its largest 4-connected region, for every class (void
    excluded) whose largest region covers at least ``min_area``. Unlike :func:`class_areas`,
    scattered specks of a class do not add up."""
    seg = np.asarray(seg)
    out = {}
    for cid in np.unique(seg):
        if cid == VOID_ID:
            continue
        lab, n = connected_components(seg == cid)
        frac = np.bincount(lab.ravel(), minlength=n + 1)[1:].max() / seg.size
        if frac >= min_area:
            out[int(cid)] = float(frac)
    return out


def class_areas(seg: np.ndarray, min_area: float = 0.0) -> dict[int, float]:
    """Class id -> area fraction for every class (void excluded) covering at least ``min_area``."""
    seg = np.asarray(seg)
    ids, counts = np.unique(seg, return_counts=True)
    frac = counts / seg.size
    return {int(i): float(f) for i, f in zip(ids, frac, strict=True) if i != VOID_ID and f >= min_area}


# ----------------------------------------------------------------------------- depth / normals / sketch


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """Metric depth (> 0, larger = farther) -> inverse depth min-max normalised to [0, 1] (near = 1)."""
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if not np.all(depth > 0):
        raise ValueError("depth must be strictly positive")
    inv = 1.0 / depth
    lo, hi = float(inv.min()), float(inv.max())
    if hi - lo < 1e-12:
        return np.zeros_like(inv)
    return (inv - lo) / (hi - lo)


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """Metric depth -> (H, W, 3) uint8 normalised inverse depth."""
    d = normalize_depth(depth)
    return np.repeat(np.rint(d * 255).astype(np.uint8)[..., None], 3, axis=2)


def decode_depth(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) depth image -> normalised inverse depth in [0, 1] (channel mean)."""
    rgb = _check_hw3(rgb, "rgb")
    return rgb.astype(np.float32).mean(-1) / 255.0


def _sobel(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.pad(a, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return gx / 8.0, gy / 8.0


def normals_from_depth(disparity: np.ndarray) -> np.ndarray:
    """Normalised inverse depth (H, W) -> unit normals (H, W, 3), ``normalise(-dd/dx, -dd/dy, 1)``.

    Derivatives are per image width, so a map rendered at any resolution gives the same normals.
    """
    d = np.asarray(disparity, dtype=np.float32)
    gx, gy = _sobel(d)
    w = d.shape[1]
    n = np.stack([-gx * w, -gy * w, np.ones_like(d)], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) -> uint8 ``n * 127.5 + 127.5``."""
    return np.clip(np.rint(np.asarray(normals) * 127.5 + 127.5), 0, 255).astype(np.uint8)


def decode_normals(rgb: np.ndarray) -> np.ndarray:
    """uint8 normal image -> unit normals (H, W, 3)."""
    n = (_check_hw3(rgb, "rgb").astype(np.float32) - 127.5) / 127.5
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)


def encode_sketch(edges: np.ndarray) -> np.ndarray:
    """Soft edges (H, W) in [0, 1] -> (H, W, 3) uint8, white edges on black."""
    e = np.clip(np.asarray(edges, dtype=np.float32), 0, 1)
    return np.repeat(np.rint(e * 255).astype(np.uint8)[..., None], 3, axis=2)


def decode_sketch(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) sketch image -> soft edges in [0, 1]."""
    return _check_hw3(rgb, "rgb").astype(np.float32).mean(-1) / 255.0


# ----------------------------------------------------------------------------- resizing


def resize_labels(labels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a label map with nearest neighbour (never blend ids). ``size`` is (W, H) or a side."""
    wh = (size, size) if isinstance(size, int) else tuple(size)
    return np.asarray(Image.fromarray(np.asarray(labels, dtype=np.uint8)).resize(wh, Image.NEAREST))


def resize_image(rgb: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a continuous 3-channel condition or image (bilinear)."""
    wh = (size, size) if isinstance(size, int) else tuple(size)
    return np.asarray(Image.fromarray(np.asarray(rgb, dtype=np.uint8)).resize(wh, Image.BILINEAR))

"""Rendering a :class:`~fgdm.world.scene.Scene` at any resolution: image and every condition map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .categories import category
from .conditions import (
    encode_depth,
    encode_normals,
    encode_segmentation,
    encode_sketch,
    normalize_depth,
    normals_from_depth,
)
from .scene import Scene, SceneObject
from .sprites import layer_origin, sprite_layer

MIN_SIZE, MAX_SIZE = 64, 512


def check_size(size: int, name: str = "size") -> int:
    """Validate a render resolution: a multiple of 8 in [64, 512]."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise ValueError(f"{name} must be an integer, got {size!r}")
    if not (MIN_SIZE <= size <= MAX_SIZE) or size % 8:
        raise ValueError(f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE}, got {size}")
    return int(size)


@dataclass
class Render:
    """One rendered scene. Arrays are (H, W[, C]); label maps are uint8."""

    scene: Scene
    size: int
    image: np.ndarray  # (H, W, 3) uint8, with the scene's style applied
    seg: np.ndarray  # (H, W) uint8 class ids
    instance: np.ndarray  # (H, W) uint8 instance ids (0 = background)
    depth: np.ndarray  # (H, W) float32 distance (larger = farther)
    normals: np.ndarray  # (H, W, 3) float32 unit normals
    sketch: np.ndarray  # (H, W) float32 soft edges in [0, 1]
    amodal: dict[int, np.ndarray]  # instance id -> (H, W) bool full (unoccluded) footprint

    def boxes(self) -> dict[int, tuple[int, int, int, int]]:
        """Instance id -> (x0, y0, x1, y1) box of its visible pixels (x1, y1 exclusive)."""
        out = {}
        for o in self.scene.objects:
            ys, xs = np.nonzero(self.instance == o.instance_id)
            if len(ys):
                out[o.instance_id] = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        return out

    def visible_fraction(self) -> dict[int, float]:
        """Instance id -> visible pixels / full footprint pixels."""
        vis = np.bincount(self.instance.ravel(), minlength=256)
        return {k: float(vis[k] / max(1, m.sum())) for k, m in self.amodal.items()}

    def conditions(self) -> dict[str, np.ndarray]:
        """Each condition as the 3-channel uint8 image the papers use."""
        return {
            "seg": encode_segmentation(self.seg),
            "depth": encode_depth(self.depth),
            "normal": encode_normals(self.normals),
            "sketch": encode_sketch(self.sketch),
        }


# ----------------------------------------------------------------------------- textures


def _rng(scene: Scene, salt: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([scene.texture_seed, *salt.encode()]))


def _noise(rng: np.random.Generator, gh: int, gw: int, h: int, w: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: a (gh, gw) random grid upsampled bilinearly (resolution-independent)."""
    g = Image.fromarray(rng.random((gh, gw)).astype(np.float32), mode="F")
    return np.asarray(g.resize((w, h), Image.BILINEAR))


def _band_top(band, xs: np.ndarray) -> np.ndarray:
    top = np.full_like(xs, band.top)
    w = band.wave
    for i in range(0, len(w), 3):
        a, f, p = w[i : i + 3]
        if band.shape == "peaks":
            frac = (f * xs + p / (2 * np.pi)) % 1.0
            top -= a * (1 - 4 * np.abs(frac - 0.5))
        elif band.shape == "bumps":
            top -= a * np.abs(np.sin(2 * np.pi * 4 * f * xs + p))
        else:
            top -= a * np.sin(2 * np.pi * f * xs + p)
    return top


def _texture(scene: Scene, stuff: str, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    h, w = len(ys), len(xs)
    rng = _rng(scene, stuff)
    base = np.array(scene.colors[stuff], dtype=np.float32)
    yy = ys[:, None] * np.ones((1, w), dtype=np.float32)
    if stuff == "sky":
        top = base * 0.8
        bottom = np.minimum(base * 1.2 + 30, 255)
        t = np.clip(yy / max(scene.horizon, 0.1), 0, 1)[..., None]
        img = top * (1 - t) + bottom * t
        clouds = np.clip((_noise(rng, 4, 6, h, w) * 0.7 + _noise(rng, 8, 12, h, w) * 0.3 - 0.58) * 5, 0, 1)
        return img * (1 - clouds[..., None] * 0.8) + 250 * clouds[..., None] * 0.8
    n = _noise(rng, 16, 16, h, w) * 0.6 + _noise(rng, 48, 48, h, w) * 0.4
    if stuff == "water":
        streaks = _noise(rng, 40, 6, h, w)
        img = base * (0.85 + 0.3 * streaks[..., None])
        return img + 60 * (streaks > 0.8)[..., None]
    if stuff == "road":
        img = base * (0.9 + 0.2 * n[..., None])
        # dashed centre line converging to the vanishing point
        dy = np.maximum(yy - scene.horizon, 1e-3)
        lane = np.abs(xs[None, :] - 0.5) < 0.012 * dy / 0.5
        dash = (np.floor(np.log(scene.ground_depth(yy)) * 6) % 2) == 0
        return np.where((lane & dash & (yy > scene.horizon))[..., None], np.array([235, 225, 120], np.float32), img)
    if stuff == "floor":
        depth = scene.ground_depth(yy)
        planks = (np.floor(np.log(depth) * 10) % 2)[..., None]
        return base * (0.9 + 0.1 * planks + 0.15 * n[..., None])
    if stuff == "wall":
        stripes = (np.floor(xs * 24) % 2)[None, :, None] * (rng.random() < 0.5)
        return base * (0.95 + 0.05 * stripes + 0.06 * n[..., None])
    if stuff == "mountain":
        shade = np.clip(1.15 - (yy - scene.horizon + 0.2) * 1.5, 0.7, 1.2)[..., None]
        return base * shade * (0.9 + 0.2 * n[..., None])
    if stuff == "tree":
        return base * (0.7 + 0.6 * _noise(rng, 24, 48, h, w)[..., None])
    # grass, sand, snow: noisy
    amp = {"grass": 0.35, "sand": 0.15, "snow": 0.06}[stuff]
    return base * (1 - amp / 2 + amp * n[..., None])


# ----------------------------------------------------------------------------- objects


def _object_layer(obj: SceneObject, s: int) -> tuple[np.ndarray, int, int]:
    """The object's tinted RGBA pixels at resolution ``s`` (float32 in [0, 1]) and its top-left corner."""
    a = sprite_layer(obj.sprite, obj.size, obj.flip, obj.rotation, s).copy()
    a[..., :3] *= np.array(obj.tint, dtype=np.float32)
    x0, y0 = layer_origin(a.shape, obj.cx, obj.base_y, s)
    return np.clip(a, 0, 1), x0, y0


def _clip(x0: int, y0: int, h: int, w: int, s: int):
    """Slices of the canvas and of a (h, w) layer placed at (x0, y0), or None if off-canvas."""
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(s, x0 + w), min(s, y0 + h)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    return (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))


def sketch_from(rgb: np.ndarray, label_maps) -> np.ndarray:
    """The world's sketch map: soft edges (H, W) in [0, 1] of an image (H, W, 3; 0-255, before any
    style) and its label maps (each (H, W); every render uses its instance and class maps): the
    label maps' boundaries, blurred, and 0.6 x the image's own luminance edges (textures).

    The same function reads a *generated* image's sketch with a judge's class map in place of the
    render's maps (``fgdm eval fgdm``'s sketch consistency); resolution-independent, as renders are.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got shape {rgb.shape}")
    h, s = rgb.shape[:2]
    lum = _blur(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32), s / 256)
    gy, gx = np.gradient(lum)
    texture_edges = np.clip((np.hypot(gx, gy) * (128 / s) - 12) / 40, 0, 1)
    boundary = np.zeros((h, s), dtype=np.float32)
    for lab in label_maps:
        if np.shape(lab) != (h, s):
            raise ValueError(f"label maps must be {(h, s)} like the image, got {np.shape(lab)}")
        boundary[:, 1:] = np.maximum(boundary[:, 1:], lab[:, 1:] != lab[:, :-1])
        boundary[1:, :] = np.maximum(boundary[1:, :], lab[1:, :] != lab[:-1, :])
    boundary = np.clip(_blur(boundary, max(0.6, s / 200)) * 2.0, 0, 1)
    return np.maximum(boundary, 0.6 * texture_edges).astype(np.float32)


def _blur(a: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian-like blur of a 2-D float array (separable taps; large radii by down/up-sampling)."""
    a = np.asarray(a, dtype=np.float32)
    if radius > 3:  # three box passes (running sums) approximate a Gaussian of this radius
        r = max(1, round(radius * 0.9))
        for _ in range(3):
            for axis in (0, 1):
                p = np.pad(a, [(r + 1, r) if ax == axis else (0, 0) for ax in (0, 1)], mode="edge")
                c = np.cumsum(p, axis=axis, dtype=np.float64)
                n = a.shape[axis]
                hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
                lo = np.take(c, np.arange(0, n), axis=axis)
                a = ((hi - lo) / (2 * r + 1)).astype(np.float32)
        return a
    k = int(np.ceil(3 * radius))
    taps = np.exp(-0.5 * (np.arange(-k, k + 1) / radius) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        p = np.pad(a, [(k, k) if ax == axis else (0, 0) for ax in (0, 1)], mode="edge")
        n = a.shape[axis]
        a = sum(t * np.take(p, np.arange(i, i + n), axis=axis) for i, t in enumerate(taps))
    return a.astype(np.float32)


# ----------------------------------------------------------------------------- styles


def _apply_style(img: np.ndarray, style: str, scene: Scene, sketch: np.ndarray) -> np.ndarray:
    s = img.shape[0]
    if style == "photo":
        yy, xx = np.mgrid[0:s, 0:s] / s - 0.5
        vignette = 1 - 0.25 * (xx**2 + yy**2)
        grain = _rng(scene, "grain").normal(0, 3, img.shape[:2])
        return img * vignette[..., None] + grain[..., None]
    if style == "night":
        lum = img.mean(-1, keepdims=True)
        return (0.45 * img + 0.2 * lum) * np.array([0.45, 0.5, 0.85]) + np.array([5, 8, 25])
    if style == "grayscale":
        return np.repeat((img @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1)
    if style == "pencil sketch":
        gray = np.clip(img @ np.array([0.299, 0.587, 0.114]), 0, 255)
        blurred = _blur(255 - gray, max(1.0, s / 48))
        dodge = np.clip(gray * 255 / np.maximum(255 - blurred, 1), 0, 255)
        out = np.minimum(dodge, 255 - 170 * sketch) * 0.97 + 6
        return np.repeat(out[..., None], 3, -1) * np.array([1.0, 0.98, 0.94])
    if style == "pixel art":
        cells = 40  # the same pixel grid at every resolution
        small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((cells, cells), Image.BOX)
        small = small.quantize(24, method=Image.Quantize.MEDIANCUT).convert("RGB")
        return np.asarray(small.resize((s, s), Image.NEAREST), dtype=np.float32)
    raise ValueError(f"unknown style {style!r}")


# ----------------------------------------------------------------------------- render


def render(scene: Scene, size: int = 128) -> Render:
    """Render ``scene`` at ``size`` x ``size`` pixels (a multiple of 8 in [64, 512])."""
    s = check_size(size)
    ys = ((np.arange(s) + 0.5) / s).astype(np.float32)
    xs = ys.copy()

    # 1. background: stuff labels, colours and depth, band by band (top to bottom)
    seg = np.zeros((s, s), dtype=np.uint8)
    depth = np.zeros((s, s), dtype=np.float32)
    img = np.zeros((s, s, 3), dtype=np.float32)
    yy = ys[:, None]
    ground = scene.ground_depth(yy).astype(np.float32) * np.ones((1, s), np.float32)
    for band in scene.bands:
        m = yy >= _band_top(band, xs)[None, :]
        cid = category(band.stuff).id
        seg[m] = cid
        depth[m] = ground[m] if band.depth is None else band.depth
        img[m] = _texture(scene, band.stuff, ys, xs)[m]

    # 2. objects, far to near: shadow, then pixels, labels and depth
    instance = np.zeros((s, s), dtype=np.uint8)
    amodal: dict[int, np.ndarray] = {}
    for obj in scene.objects:
        layer, x0, y0 = _object_layer(obj, s)
        lh, lw = layer.shape[:2]
        if obj.on_ground:
            sy, sx = round(obj.base_y * s), round(obj.cx * s)
            ry, rx = max(1, lh // 12), max(2, int(lw * 0.45))
            y0s, y1s, x0s, x1s = max(0, sy - ry), min(s, sy + ry + 1), max(0, sx - rx), min(s, sx + rx + 1)
            if y0s < y1s and x0s < x1s:  # a soft elliptic contact shadow, drawn only where it falls
                yy_, xx_ = np.ogrid[y0s - sy : y1s - sy, x0s - sx : x1s - sx]
                shadow = np.clip(1 - ((xx_ / rx) ** 2 + (yy_ / ry) ** 2), 0, 1)
                img[y0s:y1s, x0s:x1s] *= 1 - 0.35 * shadow[..., None]
        clip = _clip(x0, y0, lh, lw, s)
        full = np.zeros((s, s), dtype=bool)
        amodal[obj.instance_id] = full
        if clip is None:
            continue
        (cy, cx), (ly, lx) = clip
        alpha = layer[ly, lx, 3]
        img[cy, cx] = img[cy, cx] * (1 - alpha[..., None]) + 255 * layer[ly, lx, :3] * alpha[..., None]
        mask = alpha > 0.5
        full[cy, cx] = mask
        # a shallow dome: the object's surface bulges towards the camera by up to 8% of its distance
        dome = _blur(layer[..., 3], max(1.0, min(lh, lw) / 6))[ly, lx]
        z = obj.depth * (1 - 0.08 * dome / max(float(dome.max()), 1e-6))
        # occlusion-consistent: what an object covers is strictly farther than the object there
        z = np.minimum(z, depth[cy, cx] * 0.999)
        seg[cy, cx] = np.where(mask, obj.category_id, seg[cy, cx])
        instance[cy, cx] = np.where(mask, obj.instance_id, instance[cy, cx])
        depth[cy, cx] = np.where(mask, z, depth[cy, cx])

    # 3. conditions derived from the maps
    normals = normals_from_depth(normalize_depth(depth))
    sketch = sketch_from(img, (instance, seg))

    # 4. global style (conditions stay style-independent)
    image = np.clip(np.rint(_apply_style(img, scene.style, scene, sketch)), 0, 255).astype(np.uint8)
    return Render(scene, s, image, seg, instance, depth, normals.astype(np.float32), sketch, amodal)

"""Scene sampling: a resolution-independent description of one SceneWorld scene.

A scene is a background layout of stuff bands (sky over ground with a horizon, wall over floor, ...)
and 1-K objects standing on the ground plane (or flying in the sky) under a pinhole camera at height
``CAMERA_HEIGHT``: an object whose base is at image row ``y`` is at distance
``CAMERA_HEIGHT / (y - horizon)``, so nearer objects stand lower and are drawn larger. Objects are
kept in paint order (far to near), and every object keeps at least ``min_visible`` of its area
unoccluded. Everything is a pure function of ``(config, seed)``.

Coordinates are fractions of the image side (x right, y down), so one scene renders consistently
at any resolution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from .categories import SCENE_KINDS, THINGS, Category, category, resolve_categories
from .sprites import layer_origin, sprite_layer, sprite_rgba, sprites_by_category
from .yaml12 import load_yaml

CAMERA_HEIGHT = 1.6
SKY_DEPTH = 100.0
GROUND_MAX_DEPTH = 80.0
MOUNTAIN_DEPTH = 70.0
TREE_DEPTH = 35.0
STYLES = ("photo", "night", "grayscale", "pencil sketch", "pixel art")
MIN_SIZE = 0.15  # smallest max-side of an object, as a fraction of the image


@dataclass(frozen=True)
class WorldConfig:
    """What scenes the sampler draws. Loadable from YAML (``WorldConfig.from_yaml``).

    Attributes:
        min_objects / max_objects: number of objects per scene, drawn uniformly in this range. An
            object that cannot be placed while every object stays ``min_visible`` (15 tries) is
            left out, so a crowded scene can hold fewer (never none).
        categories: thing categories to draw from (None = all 80).
        scene_kinds: background kinds (field, street, beach, lake, snow, room).
        styles: global styles to draw from; "photo" is the plain style.
        style_prob: probability of a non-photo style (if any is allowed).
        context_bias: how much more likely a category is in a scene kind it belongs to.
        repeat_prob: probability that an extra object repeats a category already in the scene
            (so captions see counts: "two apples").
        min_visible: every object keeps at least this fraction of its pixels unoccluded.
        mention_all_prob: captions name every object with this probability, else a subset.
        relation_prob: probability of a spatial-relation caption when two objects are named.
        background_prob: probability that a caption names the background.
    """

    min_objects: int = 1
    max_objects: int = 6
    categories: tuple[str, ...] | None = None
    scene_kinds: tuple[str, ...] = SCENE_KINDS
    styles: tuple[str, ...] = STYLES
    style_prob: float = 0.3
    context_bias: float = 4.0
    repeat_prob: float = 0.2
    min_visible: float = 0.5
    mention_all_prob: float = 0.5
    relation_prob: float = 0.35
    background_prob: float = 0.6

    def __post_init__(self) -> None:
        for name in ("min_objects", "max_objects"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.max_objects > 32:
            raise ValueError(f"max_objects must be <= 32, got {self.max_objects}")
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) must be <= max_objects ({self.max_objects})")
        if self.categories is not None:
            cats = (self.categories,) if isinstance(self.categories, str) else self.categories
            object.__setattr__(self, "categories", tuple(c.name for c in resolve_categories(list(cats))))
        kinds = (self.scene_kinds,) if isinstance(self.scene_kinds, str) else tuple(self.scene_kinds)
        bad = [k for k in kinds if k not in SCENE_KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown scene_kinds {bad or kinds!r}; choose from {list(SCENE_KINDS)}")
        object.__setattr__(self, "scene_kinds", kinds)
        styles = (self.styles,) if isinstance(self.styles, str) else tuple(self.styles)
        bad = [s for s in styles if s not in STYLES]
        if bad or not styles:
            raise ValueError(f"unknown styles {bad or styles!r}; choose from {list(STYLES)}")
        object.__setattr__(self, "styles", styles)
        for name in (
            "style_prob",
            "repeat_prob",
            "min_visible",
            "mention_all_prob",
            "relation_prob",
            "background_prob",
        ):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if self.context_bias < 1.0:
            raise ValueError(f"context_bias must be >= 1, got {self.context_bias!r}")

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown world config keys {unknown}; known: {sorted(known)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> WorldConfig:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ValueError(f"cannot read config {str(path)!r}: {e.strerror}") from None
        try:
            d = load_yaml(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config {str(path)!r} is not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"config {str(path)!r} must be a mapping of world settings")
        d = d.get("world", d)
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class SceneObject:
    """One object instance. Sizes and positions are fractions of the image side."""

    instance_id: int  # 1..n in paint order (0 = background)
    category: str
    sprite: int  # atlas index
    cx: float  # centre x
    base_y: float  # bottom edge y (the ground contact point for objects on the ground)
    size: float  # longest side of the (unrotated) sprite
    flip: bool
    rotation: float  # degrees, counter-clockwise
    tint: tuple[float, float, float]  # per-channel colour gain
    depth: float  # distance from the camera
    on_ground: bool

    @property
    def category_id(self) -> int:
        return category(self.category).id

    def extent(self) -> tuple[float, float]:
        """(width, height) of the unrotated sprite."""
        a = sprite_rgba(self.sprite)
        h, w = a.shape[:2]
        s = self.size / max(h, w)
        return w * s, h * s


@dataclass(frozen=True)
class Band:
    """A stuff region: everything below ``top`` (a function of x given by ``wave``) down to the next band."""

    stuff: str
    top: float  # mean y of its upper boundary
    wave: tuple[float, ...] = ()  # (amplitude, frequency, phase, ...) triples: top(x) = top - sum a*f(x)
    shape: str = "flat"  # flat | peaks | bumps
    depth: float | None = None  # constant depth (bands standing up: mountains, trees, walls); None = ground plane


@dataclass(frozen=True)
class Scene:
    seed: int
    kind: str
    horizon: float  # y of the ground plane's horizon (may be < 0 for rooms)
    bands: tuple[Band, ...]  # top to bottom; the first covers the image top
    objects: tuple[SceneObject, ...]  # paint order, far to near
    style: str
    texture_seed: int
    colors: dict = field(default_factory=dict)  # per-stuff base colour (RGB) for this scene

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        d = dict(d)
        d["bands"] = tuple(Band(**{**b, "wave": tuple(b["wave"])}) for b in d["bands"])
        d["objects"] = tuple(SceneObject(**{**o, "tint": tuple(o["tint"])}) for o in d["objects"])
        return cls(**d)

    def ground_depth(self, y: np.ndarray) -> np.ndarray:
        """Depth of the ground plane at image rows ``y`` (fractions)."""
        dy = np.maximum(np.asarray(y, dtype=np.float64) - self.horizon, 1e-6)
        return np.minimum(CAMERA_HEIGHT / dy, GROUND_MAX_DEPTH)


# ----------------------------------------------------------------------------- sampling

_BASE_COLORS = {
    "sky": [(110, 170, 235), (135, 190, 240), (90, 150, 220), (180, 205, 230)],
    "tree": [(40, 110, 50), (55, 125, 45), (30, 90, 60)],
    "mountain": [(120, 120, 140), (105, 110, 125), (140, 125, 130)],
    "grass": [(95, 170, 70), (110, 160, 60), (80, 150, 80), (140, 170, 70)],
    "sand": [(225, 200, 150), (235, 215, 170), (215, 190, 140)],
    "snow": [(240, 245, 252), (230, 238, 248)],
    "water": [(50, 120, 190), (40, 140, 180), (60, 110, 170)],
    "road": [(90, 90, 95), (105, 100, 100), (75, 78, 85)],
    "wall": [(230, 220, 200), (200, 215, 230), (235, 200, 190), (210, 230, 205), (180, 170, 160)],
    "floor": [(160, 110, 70), (190, 150, 100), (140, 140, 145), (120, 80, 50)],
}


def _wave(rng: np.random.Generator, amp: float, n: int = 3) -> tuple[float, ...]:
    out: list[float] = []
    for k in range(n):
        out += [
            float(amp * rng.uniform(0.3, 1.0) / (k + 1)),
            float(rng.uniform(1, 3) * (k + 1)),
            float(rng.uniform(0, 2 * np.pi)),
        ]
    return tuple(out)


def _sample_background(rng: np.random.Generator, kind: str) -> tuple[float, tuple[Band, ...]]:
    if kind == "room":
        wall_line = rng.uniform(0.38, 0.6)
        wall_depth = rng.uniform(4.0, 8.0)
        horizon = wall_line - CAMERA_HEIGHT / wall_depth
        return horizon, (Band("wall", 0.0, depth=wall_depth), Band("floor", wall_line))
    horizon = rng.uniform(0.3, 0.55)
    bands = [Band("sky", 0.0, depth=SKY_DEPTH)]
    backdrop = {
        "field": ("tree", "mountain", None),
        "street": ("tree", None),
        "lake": ("mountain", "tree", None),
        "snow": ("mountain", "tree", None),
        "beach": (None,),
    }[kind]
    back = backdrop[rng.integers(len(backdrop))]
    if back == "mountain":
        bands.append(Band("mountain", horizon - rng.uniform(0.08, 0.2), _wave(rng, 0.06), "peaks", MOUNTAIN_DEPTH))
    elif back == "tree":
        bands.append(Band("tree", horizon - rng.uniform(0.05, 0.12), _wave(rng, 0.02), "bumps", TREE_DEPTH))
    ground = {"field": "grass", "street": "road", "lake": "water", "snow": "snow", "beach": "water"}[kind]
    bands.append(Band(ground, horizon))
    if kind == "beach":
        bands.append(Band("sand", horizon + rng.uniform(0.12, 0.3) * (1 - horizon), _wave(rng, 0.015), "flat"))
    return horizon, tuple(bands)


def _pick_categories(rng: np.random.Generator, cfg: WorldConfig, kind: str, n: int) -> list[Category]:
    pool = [category(c) for c in cfg.categories] if cfg.categories else list(THINGS)
    w = np.array([cfg.context_bias if kind in c.context else 1.0 for c in pool])
    w /= w.sum()
    out: list[Category] = []
    for _ in range(n):
        if out and rng.random() < cfg.repeat_prob:
            out.append(out[rng.integers(len(out))])
        else:
            out.append(pool[rng.choice(len(pool), p=w)])
    return out


def _sample_object(
    rng: np.random.Generator, cat: Category, horizon: float, floor_top: float, sky_bottom: float, outdoor: bool
) -> dict:
    variants = sprites_by_category()[cat.name]
    sprite = int(variants[rng.integers(len(variants))])
    size_near = 0.6 * cat.size * rng.uniform(0.85, 1.15)  # size if standing at the bottom edge
    a = sprite_rgba(sprite)
    aspect = a.shape[1] / a.shape[0]
    flying = cat.flies and outdoor and rng.random() < 0.6 and sky_bottom > 0.2
    # Perspective: size = size_near * t with t = (base_y - horizon) / (1 - horizon).
    t_min = max(MIN_SIZE / size_near, (max(floor_top, horizon) + 0.02 - horizon) / (1 - horizon))
    t_min = min(t_min, 0.95)
    if flying:
        t = rng.uniform(min(t_min, 0.5), min(1.0, max(t_min, 0.6)))
    else:
        t = rng.uniform(t_min, 1.0)
    size = max(MIN_SIZE, size_near * t)
    depth = CAMERA_HEIGHT / max(t * (1 - horizon), 1e-3)
    h = size if aspect <= 1 else size / aspect
    w = size * aspect if aspect <= 1 else size
    if flying:
        base_y = rng.uniform(min(h + 0.02, sky_bottom - 0.02), max(h + 0.02, sky_bottom - 0.02))
    else:
        base_y = horizon + t * (1 - horizon) + rng.uniform(-0.01, 0.03)
    margin = min(0.05, w / 4)
    lo, hi = w / 2 - margin, 1 - w / 2 + margin
    cx = rng.uniform(lo, hi) if hi > lo else 0.5
    return dict(
        category=cat.name,
        sprite=sprite,
        cx=float(cx),
        base_y=float(base_y),
        size=float(size),
        flip=bool(rng.random() < 0.5),
        rotation=float(rng.uniform(-8, 8)),
        tint=tuple(float(v) for v in rng.uniform(0.88, 1.12, 3)),
        depth=float(depth),
        on_ground=not flying,
    )


_VIS_RES = 64


@lru_cache(maxsize=4096)
def _footprint(sprite: int, size: float, flip: bool, rotation: float, res: int) -> np.ndarray:
    return sprite_layer(sprite, size, flip, rotation, res)[..., 3] > 0.5


def _object_mask(obj: dict, res: int = _VIS_RES) -> tuple[np.ndarray, int, int]:
    """Binary footprint of an object at a coarse resolution, as the renderer draws it: (mask, x0, y0)."""
    m = _footprint(obj["sprite"], obj["size"], obj["flip"], obj["rotation"], res)
    x0, y0 = layer_origin(m.shape, obj["cx"], obj["base_y"], res)
    return m, x0, y0


def visible_fractions(objects: list[dict], res: int = _VIS_RES) -> list[float]:
    """Unoccluded fraction of each object (paint order far to near), at a coarse resolution."""
    canvas = np.full((res, res), -1, dtype=np.int32)
    totals = []
    for i, o in enumerate(objects):
        m, x0, y0 = _object_mask(o, res)
        ys, xs = np.nonzero(m)
        ys, xs = ys + y0, xs + x0
        inside = (ys >= 0) & (ys < res) & (xs >= 0) & (xs < res)
        totals.append(max(1, len(ys)))
        canvas[ys[inside], xs[inside]] = i
    counts = np.bincount(canvas[canvas >= 0].ravel(), minlength=len(objects))
    return [float(c / t) for c, t in zip(counts, totals, strict=True)]


def sample_scene(seed: int, config: WorldConfig | None = None, *, objects: Sequence[str] | None = None) -> Scene:
    """Draw the scene for ``seed`` (a pure function of ``(config, seed, objects)``).

    ``objects``: the thing categories to place, one object each, instead of drawing their number
    and kinds from ``config`` (e.g. a scene that shows exactly a prompt's objects). An object that
    cannot be placed while every object keeps ``min_visible`` is left out, as in a drawn scene, so
    check ``scene.objects`` if all of them must be there.
    """
    cfg = config or WorldConfig()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    chosen = None
    if objects is not None:
        if isinstance(objects, str) or not objects:
            raise ValueError(f"objects must be a non-empty list of category names, got {objects!r}")
        chosen = [category(c) for c in objects]
        stuff = [c.name for c in chosen if c.kind != "thing"]
        if stuff:
            raise ValueError(f"objects must be thing categories; {stuff} are stuff")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5CE7E]))
    kind = cfg.scene_kinds[rng.integers(len(cfg.scene_kinds))]
    horizon, bands = _sample_background(rng, kind)
    outdoor = kind != "room"
    floor_top = bands[-1].top if kind == "room" else horizon
    if kind == "beach":
        floor_top = horizon  # objects may stand in the water or on the sand
    sky_bottom = min(b.top for b in bands[1:]) if outdoor else 0.0
    if chosen is None:
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        cats = _pick_categories(rng, cfg, kind, n)
    else:
        cats = chosen
    placed: list[dict] = []
    for cat in cats:
        for _attempt in range(15):
            cand = _sample_object(rng, cat, horizon, floor_top, sky_bottom, outdoor)
            trial = sorted(placed + [cand], key=lambda o: -o["depth"])
            if min(visible_fractions(trial)) >= cfg.min_visible:
                placed = trial
                break
    if not placed:  # always at least one object: the first category, alone in the scene
        placed = [_sample_object(rng, cats[0], horizon, floor_top, sky_bottom, outdoor)]
    objects = tuple(SceneObject(instance_id=i + 1, **o) for i, o in enumerate(placed))
    style = "photo"
    non_photo = [s for s in cfg.styles if s != "photo"]
    if non_photo and ("photo" not in cfg.styles or rng.random() < cfg.style_prob):
        style = non_photo[rng.integers(len(non_photo))]
    colors = {}
    for b in bands:
        choices = _BASE_COLORS[b.stuff]
        base = np.array(choices[rng.integers(len(choices))], dtype=np.float64)
        colors[b.stuff] = [int(v) for v in np.clip(base + rng.normal(0, 8, 3), 0, 255)]
    return Scene(
        seed=int(seed),
        kind=kind,
        horizon=float(horizon),
        bands=bands,
        objects=objects,
        style=style,
        texture_seed=int(rng.integers(2**31)),
        colors=colors,
    )

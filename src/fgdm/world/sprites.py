"""The shipped sprite atlas: colour-emoji glyphs and drawn sprites for every thing category.

``data/atlas.png`` (RGBA) and ``data/atlas.json`` are produced once by ``scripts/render_atlas.py``
from Debian's ``fonts-noto-color-emoji`` (licence: ``data/ATLAS_LICENSE.txt``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from PIL import Image

from .categories import THINGS, category


@dataclass(frozen=True)
class Sprite:
    index: int  # position in the atlas manifest (stable: stored in scene records)
    category: str
    source: str  # "emoji U+1F415" or "drawn fire_hydrant"
    image: Image.Image  # RGBA, cropped to alpha, max side = the atlas cell

    @property
    def aspect(self) -> float:
        """Width / height."""
        return self.image.width / self.image.height


@cache
def load_atlas() -> tuple[Sprite, ...]:
    """All sprites of the shipped atlas, in manifest order (loaded once per process)."""
    data = resources.files("fgdm.world") / "data"
    manifest = json.loads((data / "atlas.json").read_text())
    with (data / "atlas.png").open("rb") as f:
        atlas = Image.open(f)
        atlas.load()
    atlas = atlas.convert("RGBA")
    out = []
    for i, entry in enumerate(manifest["sprites"]):
        x, y, w, h = entry["box"]
        out.append(Sprite(i, entry["category"], entry["source"], atlas.crop((x, y, x + w, y + h))))
    return tuple(out)


@cache
def sprites_by_category() -> dict[str, tuple[int, ...]]:
    """Category name -> atlas indices of its sprite variants (every thing category has >= 1)."""
    out: dict[str, list[int]] = {c.name: [] for c in THINGS}
    for s in load_atlas():
        out[category(s.category).name].append(s.index)
    return {k: tuple(v) for k, v in out.items()}


@cache
def sprite_rgba(index: int) -> np.ndarray:
    """The sprite as a float32 (h, w, 4) array in [0, 1] (read-only, cached)."""
    a = np.asarray(load_atlas()[index].image, dtype=np.float32) / 255.0
    a.setflags(write=False)
    return a


@cache
def _sprite_image(index: int) -> Image.Image:
    return load_atlas()[index].image


def sprite_layer(index: int, size: float, flip: bool, rotation: float, res: int) -> np.ndarray:
    """The sprite as it is drawn in a ``res``-px image: longest side ``size * res`` pixels,
    mirrored if ``flip``, rotated by ``rotation`` degrees (counter-clockwise, canvas expanded).

    Returns float32 (h, w, 4) RGBA in [0, 1]. The renderer and the scene sampler's visibility
    check both use it, so what the sampler checks is what gets drawn.
    """
    im = _sprite_image(index)
    scale = size * res / max(im.size)
    w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    im = im.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if abs(rotation) > 0.5:
        im = im.rotate(rotation, resample=Image.BILINEAR, expand=True)
    return np.asarray(im, dtype=np.float32) / 255.0


def layer_origin(shape: tuple[int, ...], cx: float, base_y: float, res: int) -> tuple[int, int]:
    """Top-left pixel of a layer of ``shape`` centred at ``cx`` with its bottom edge at ``base_y``."""
    return round(cx * res - shape[1] / 2), round(base_y * res - shape[0])

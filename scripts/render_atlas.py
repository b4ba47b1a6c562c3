"""Render the SceneWorld sprite atlas (run once; the result ships with the package).

Needs Debian's ``fonts-noto-color-emoji``. Users never run this: the atlas
(``src/fgdm/world/data/atlas.png``), its manifest and the font's licence notice are package data.

    python scripts/render_atlas.py [--font PATH] [--cell 128]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from fgdm.world.categories import THINGS
from fgdm.world.sprites_drawn import draw_sprite

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
LICENCE = "/usr/share/doc/fonts-noto-color-emoji/copyright"
DATA = Path(__file__).resolve().parents[1] / "src" / "fgdm" / "world" / "data"


def render_glyph(font: ImageFont.FreeTypeFont, glyph: str, cell: int) -> Image.Image:
    # Noto Color Emoji is a bitmap (CBDT) font: Pillow renders it only at size 109.
    im = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((8, 8), glyph, font=font, embedded_color=True)
    im = im.crop(im.getchannel("A").getbbox())
    scale = cell / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--font", default=FONT)
    ap.add_argument("--cell", type=int, default=128)
    ap.add_argument("--cols", type=int, default=16)
    args = ap.parse_args()
    font = ImageFont.truetype(args.font, 109)

    sprites: list[tuple[dict, Image.Image]] = []
    for cat in THINGS:
        for g in cat.glyphs:
            src = "emoji " + " ".join(f"U+{ord(ch):04X}" for ch in g)
            sprites.append(({"category": cat.name, "source": src}, render_glyph(font, g, args.cell)))
        for name in cat.drawn:
            sprites.append(({"category": cat.name, "source": f"drawn {name}"}, draw_sprite(name, args.cell)))

    rows = -(-len(sprites) // args.cols)
    atlas = Image.new("RGBA", (args.cols * args.cell, rows * args.cell), (0, 0, 0, 0))
    manifest = []
    for i, (meta, im) in enumerate(sprites):
        x, y = (i % args.cols) * args.cell, (i // args.cols) * args.cell
        atlas.paste(im, (x, y))
        manifest.append({**meta, "box": [x, y, im.width, im.height]})
    DATA.mkdir(parents=True, exist_ok=True)
    atlas.save(DATA / "atlas.png", optimize=True)
    (DATA / "atlas.json").write_text(
        json.dumps(
            {"cell": args.cell, "font": "Noto Color Emoji (fonts-noto-color-emoji)", "sprites": manifest}, indent=1
        )
        + "\n"
    )
    shutil.copyfile(LICENCE, DATA / "ATLAS_LICENSE.txt")
    print(f"{len(sprites)} sprites -> {DATA / 'atlas.png'} ({(DATA / 'atlas.png').stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

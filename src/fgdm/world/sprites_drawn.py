"""Procedurally drawn sprites for the COCO categories that have no colour-emoji glyph.

Each sprite is drawn with Pillow on a 512-px canvas in an emoji-like style (flat colours, a dark
outline, one highlight) and downsampled with antialiasing. ``scripts/render_atlas.py`` calls
:func:`draw_sprite` once per name and packs the results into the shipped atlas; nothing here runs
at render time.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image, ImageDraw

_S = 512  # drawing canvas
_OUT_W = 10  # outline width on the drawing canvas
Color = tuple[int, int, int]
_INK: Color = (40, 40, 48)


def _shade(c: Color, f: float) -> Color:
    return tuple(max(0, min(255, int(v * f))) for v in c)  # type: ignore[return-value]


class _Pen:
    """Thin helper: every shape gets the same outline."""

    def __init__(self) -> None:
        self.im = Image.new("RGBA", (_S, _S), (0, 0, 0, 0))
        self.d = ImageDraw.Draw(self.im)

    def rect(self, box, fill: Color, r: int = 0) -> None:
        self.d.rounded_rectangle(box, radius=r, fill=fill + (255,), outline=_INK + (255,), width=_OUT_W)

    def ellipse(self, box, fill: Color) -> None:
        self.d.ellipse(box, fill=fill + (255,), outline=_INK + (255,), width=_OUT_W)

    def poly(self, pts, fill: Color) -> None:
        self.d.polygon(pts, fill=fill + (255,), outline=_INK + (255,), width=_OUT_W)

    def line(self, pts, fill: Color, w: int) -> None:
        self.d.line(pts, fill=_INK + (255,), width=w + 2 * _OUT_W // 2 + 4, joint="curve")
        self.d.line(pts, fill=fill + (255,), width=w, joint="curve")

    def plain_rect(self, box, fill: Color) -> None:
        self.d.rectangle(box, fill=fill + (255,))


def _fire_hydrant(body: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.rect((150, 440, 362, 490), _shade(body, 0.7), r=10)  # base
        p.rect((180, 150, 332, 450), body, r=20)  # barrel
        p.rect((110, 250, 180, 320), _shade(body, 0.85), r=12)  # side nozzles
        p.rect((332, 250, 402, 320), _shade(body, 0.85), r=12)
        p.ellipse((220, 260, 292, 332), (190, 190, 200))  # front cap
        p.rect((165, 120, 347, 175), _shade(body, 0.8), r=14)  # rim
        p.d.chord((180, 40, 332, 200), 180, 360, fill=body + (255,), outline=_INK + (255,), width=_OUT_W)
        p.rect((240, 20, 272, 60), _shade(body, 0.7), r=6)  # nut
        p.plain_rect((200, 190, 215, 420), _shade(body, 1.25))  # highlight

    return draw


def _stop_sign(p: _Pen) -> None:
    p.rect((240, 300, 272, 500), (150, 150, 160), r=4)  # pole
    import math

    pts = [
        (256 + 180 * math.cos(math.pi / 8 + k * math.pi / 4), 180 + 180 * math.sin(math.pi / 8 + k * math.pi / 4))
        for k in range(8)
    ]
    p.poly(pts, (210, 30, 40))
    inner = [(256 + (x - 256) * 0.86, 180 + (y - 180) * 0.86) for x, y in pts]
    p.d.polygon(inner, outline=(255, 255, 255, 255), width=12)
    for i, x in enumerate((150, 200, 250, 300)):  # "STOP"-like white strokes
        p.d.rectangle((x + 8, 150, x + 34, 210), fill=(255, 255, 255, 255))
        if i % 2:
            p.d.rectangle((x + 8, 172, x + 34, 186), fill=(210, 30, 40, 255))


def _parking_meter(double: bool) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.rect((236, 280, 276, 500), (110, 110, 120), r=6)  # post
        heads = [(140, 250), (272, 382)] if double else [(176, 336)]
        for x0, x1 in heads:
            p.rect((x0, 80, x1, 300), (150, 155, 165), r=40)  # housing
            p.rect((x0 + 18, 110, x1 - 18, 190), (235, 240, 210), r=12)  # window
            p.d.pieslice((x0 + 30, 120, x1 - 30, 240), 200, 340, fill=(220, 60, 40, 255))  # dial needle area
            p.rect((x0 + 40, 215, x1 - 40, 240), (60, 60, 70), r=6)  # coin slot

    return draw


def _bench(wood: Color, legs: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.rect((60, 300, 90, 440), legs, r=4)
        p.rect((422, 300, 452, 440), legs, r=4)
        p.rect((40, 140, 472, 185), wood, r=8)  # backrest slats
        p.rect((40, 200, 472, 245), wood, r=8)
        p.rect((30, 270, 482, 320), _shade(wood, 0.85), r=8)  # seat
        p.rect((70, 180, 95, 275), legs, r=4)
        p.rect((417, 180, 442, 275), legs, r=4)

    return draw


def _tie(p: _Pen) -> None:
    p.poly([(206, 40), (306, 40), (286, 110), (226, 110)], (30, 70, 170))
    p.poly([(226, 105), (286, 105), (340, 400), (256, 480), (172, 400)], (40, 90, 200))
    for y in (170, 250, 330):
        p.d.line([(210, y), (300, y + 40)], fill=(240, 200, 60, 255), width=14)


def _skis(color: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        for dx in (-45, 45):
            x = 256 + dx
            p.rect((x - 22, 60, x + 22, 470), color, r=20)
            p.d.chord((x - 22, 20, x + 22, 110), 180, 360, fill=color + (255,), outline=_INK + (255,), width=8)
            p.rect((x - 26, 260, x + 26, 320), (50, 50, 60), r=6)  # binding

    return draw


def _snowboard(color: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.rect((190, 30, 322, 482), color, r=66)
        p.rect((200, 150, 312, 190), (40, 40, 50), r=8)
        p.rect((200, 320, 312, 360), (40, 40, 50), r=8)
        p.plain_rect((215, 220, 297, 290), _shade(color, 1.3))

    return draw


def _baseball_bat(color: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.poly([(240, 470), (272, 470), (300, 60), (256, 30), (212, 60)], color)
        p.ellipse((226, 455, 286, 495), _shade(color, 0.8))
        p.rect((238, 360, 274, 460), (40, 40, 45), r=8)  # grip tape

    return draw


def _baseball_glove(p: _Pen) -> None:
    leather = (170, 100, 50)
    p.ellipse((110, 150, 400, 470), leather)
    for i, x in enumerate((120, 175, 230, 285)):
        p.rect((x, 60 + (i % 2) * 20, x + 60, 260), leather, r=30)
    p.rect((340, 230, 440, 330), leather, r=40)  # thumb
    p.d.line([(170, 300), (360, 300)], fill=(90, 50, 20, 255), width=10)
    p.ellipse((190, 330, 330, 440), _shade(leather, 0.8))


def _surfboard(color: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.ellipse((176, 20, 336, 492), color)
        p.d.line([(256, 40), (256, 470)], fill=_shade(color, 0.6) + (255,), width=10)
        p.d.ellipse((200, 80, 230, 250), fill=_shade(color, 1.3) + (255,))

    return draw


def _tennis_racket(color: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.rect((240, 300, 272, 490), (40, 40, 45), r=10)  # handle
        p.poly([(256, 300), (200, 250), (312, 250)], color)
        p.ellipse((136, 20, 376, 300), color)
        p.d.ellipse((166, 50, 346, 270), fill=(245, 245, 235, 255))
        for x in range(180, 340, 22):
            p.d.line([(x, 55), (x, 265)], fill=(150, 150, 150, 255), width=4)
        for y in range(70, 260, 22):
            p.d.line([(170, y), (342, y)], fill=(150, 150, 150, 255), width=4)

    return draw


def _fork(p: _Pen) -> None:
    steel = (200, 205, 215)
    p.rect((238, 230, 274, 490), steel, r=16)
    p.rect((190, 170, 322, 250), steel, r=30)
    for x in (192, 232, 272, 306):
        p.rect((x, 30, x + 16, 200), steel, r=6)


def _chair(p: _Pen) -> None:
    wood = (170, 110, 60)
    p.rect((140, 40, 180, 470), wood, r=6)  # back legs
    p.rect((140, 60, 360, 110), wood, r=8)
    p.rect((140, 150, 360, 190), wood, r=8)
    p.rect((120, 270, 390, 320), _shade(wood, 1.1), r=8)  # seat
    p.rect((340, 300, 380, 470), wood, r=6)
    p.rect((150, 300, 190, 470), wood, r=6)


def _dining_table(round_top: bool) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        wood = (150, 95, 50) if round_top else (120, 75, 40)
        if round_top:
            p.rect((236, 230, 276, 440), wood, r=6)
            p.ellipse((160, 420, 352, 470), _shade(wood, 0.8))
            p.ellipse((30, 170, 482, 270), _shade(wood, 1.2))
        else:
            p.rect((60, 240, 100, 460), wood, r=6)
            p.rect((412, 240, 452, 460), wood, r=6)
            p.rect((30, 190, 482, 250), _shade(wood, 1.2), r=10)
            p.plain_rect((70, 255, 442, 275), _shade(wood, 0.8))

    return draw


def _tv_flat(p: _Pen) -> None:
    p.rect((30, 80, 482, 360), (35, 35, 40), r=14)
    p.rect((55, 102, 457, 338), (70, 130, 200), r=6)
    p.poly(
        [(130, 280), (230, 180), (300, 250), (350, 200), (457, 300), (457, 338), (55, 338), (55, 330)], (90, 170, 90)
    )
    p.rect((230, 360, 282, 420), (60, 60, 65), r=4)
    p.rect((150, 415, 362, 440), (60, 60, 65), r=8)


def _remote(body: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.rect((196, 30, 316, 482), body, r=40)
        p.ellipse((226, 60, 266, 100), (220, 50, 50))
        for row in range(5):
            for col in range(3):
                x, y = 214 + col * 30, 150 + row * 50
                p.d.rounded_rectangle((x, y, x + 22, y + 28), radius=6, fill=(210, 210, 215, 255))
        p.ellipse((226, 410, 286, 460), (120, 120, 130))

    return draw


def _box_appliance(body: Color, window: Color, kind: str) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        if kind == "microwave":
            p.rect((30, 130, 482, 400), body, r=16)
            p.rect((60, 160, 360, 370), window, r=10)
            p.rect((380, 160, 452, 370), _shade(body, 0.85), r=6)
            for y in (185, 225, 265):
                p.ellipse((400, y, 432, y + 28), (60, 60, 70))
            p.rect((380, 320, 452, 345), (80, 200, 120), r=4)
        elif kind == "oven":
            p.rect((80, 40, 432, 490), body, r=12)
            p.rect((80, 40, 432, 120), _shade(body, 0.8), r=12)
            for x in (120, 190, 260, 330):
                p.ellipse((x, 60, x + 40, 100), (50, 50, 55))
            p.rect((120, 170, 392, 420), window, r=12)
            p.rect((130, 140, 382, 160), (200, 200, 210), r=6)
        elif kind == "toaster":
            p.rect((90, 180, 422, 440), body, r=50)
            p.rect((150, 150, 230, 200), (60, 60, 65), r=6)
            p.rect((282, 150, 362, 200), (60, 60, 65), r=6)
            p.poly([(160, 150), (180, 70), (220, 70), (225, 150)], (220, 170, 100))
            p.rect((380, 260, 440, 290), (50, 50, 55), r=6)
            p.plain_rect((120, 220, 140, 400), _shade(body, 1.3))
        elif kind == "fridge":
            p.rect((130, 20, 382, 495), body, r=24)
            p.d.line([(130, 190), (382, 190)], fill=_INK + (255,), width=_OUT_W)
            p.rect((340, 70, 358, 160), window, r=6)
            p.rect((340, 230, 358, 360), window, r=6)
            p.plain_rect((150, 40, 170, 470), _shade(body, 1.15))

    return draw


def _sink(cabinet: bool) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        if cabinet:
            p.rect((70, 250, 442, 490), (230, 225, 210), r=8)
            p.rect((100, 290, 250, 460), (210, 205, 190), r=6)
            p.rect((262, 290, 412, 460), (210, 205, 190), r=6)
        else:
            p.rect((236, 300, 276, 490), (220, 220, 225), r=10)  # pedestal
        p.rect((50, 200, 462, 270), (235, 240, 245), r=30)  # basin rim
        p.d.ellipse((110, 210, 402, 255), fill=(170, 190, 210, 255))
        p.line([(256, 200), (256, 110), (330, 110), (330, 150)], (190, 195, 205), 28)

    return draw


def _wall_clock(p: _Pen) -> None:
    p.ellipse((56, 56, 456, 456), (200, 60, 60))
    p.ellipse((96, 96, 416, 416), (250, 250, 245))
    import math

    for k in range(12):
        a = k * math.pi / 6
        x, y = 256 + 140 * math.cos(a), 256 + 140 * math.sin(a)
        p.d.ellipse((x - 10, y - 10, x + 10, y + 10), fill=_INK + (255,))
    p.d.line([(256, 256), (256, 140)], fill=_INK + (255,), width=16)
    p.d.line([(256, 256), (350, 290)], fill=_INK + (255,), width=12)


def _vase(flowers: bool) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        body = (60, 120, 190) if not flowers else (200, 120, 80)
        if flowers:
            for x, y, c in ((180, 70, (230, 70, 90)), (256, 40, (250, 200, 60)), (330, 80, (200, 90, 200))):
                p.line([(256, 240), (x, y + 30)], (60, 150, 60), 10)
                p.ellipse((x - 40, y - 30, x + 40, y + 50), c)
        p.poly([(210, 200), (302, 200), (290, 250), (380, 360), (320, 490), (192, 490), (132, 360), (222, 250)], body)
        p.rect((196, 185, 316, 215), _shade(body, 0.8), r=8)
        p.d.line([(160, 360), (352, 360)], fill=_shade(body, 1.4) + (255,), width=14)

    return draw


def _hair_drier(body: Color) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        p.rect((270, 250, 340, 480), body, r=24)  # handle
        p.rect((40, 120, 300, 240), body, r=50)  # barrel
        p.ellipse((220, 80, 420, 280), body)  # motor housing
        p.ellipse((270, 130, 370, 230), _shade(body, 0.75))
        p.rect((20, 130, 60, 230), (70, 70, 75), r=10)  # nozzle
        p.rect((285, 300, 325, 330), (60, 60, 65), r=6)

    return draw


_RED: Color = (205, 40, 40)
DRAWERS: dict[str, Callable[[_Pen], None]] = {
    "fire_hydrant": _fire_hydrant(_RED),
    "fire_hydrant_yellow": _fire_hydrant((235, 190, 30)),
    "stop_sign": _stop_sign,
    "parking_meter": _parking_meter(False),
    "parking_meter_double": _parking_meter(True),
    "bench_wood": _bench((180, 120, 60), (70, 70, 75)),
    "bench_park": _bench((60, 130, 70), (40, 40, 45)),
    "tie": _tie,
    "skis": _skis((40, 110, 220)),
    "skis_red": _skis((220, 50, 40)),
    "snowboard": _snowboard((240, 120, 30)),
    "snowboard_green": _snowboard((60, 170, 90)),
    "baseball_bat": _baseball_bat((215, 170, 110)),
    "baseball_bat_metal": _baseball_bat((175, 180, 195)),
    "baseball_glove": _baseball_glove,
    "surfboard": _surfboard((250, 200, 70)),
    "surfboard_blue": _surfboard((70, 170, 230)),
    "tennis_racket": _tennis_racket((40, 90, 200)),
    "tennis_racket_red": _tennis_racket((210, 50, 50)),
    "fork": _fork,
    "chair": _chair,
    "dining_table": _dining_table(False),
    "dining_table_round": _dining_table(True),
    "tv_flat": _tv_flat,
    "remote": _remote((45, 45, 50)),
    "remote_silver": _remote((170, 175, 185)),
    "microwave": _box_appliance((70, 70, 78), (30, 35, 45), "microwave"),
    "microwave_white": _box_appliance((235, 235, 235), (40, 45, 55), "microwave"),
    "oven": _box_appliance((235, 235, 230), (40, 40, 45), "oven"),
    "oven_steel": _box_appliance((170, 175, 185), (30, 30, 35), "oven"),
    "toaster": _box_appliance((190, 195, 205), (0, 0, 0), "toaster"),
    "toaster_red": _box_appliance((200, 50, 50), (0, 0, 0), "toaster"),
    "sink": _sink(False),
    "sink_cabinet": _sink(True),
    "refrigerator": _box_appliance((240, 240, 240), (150, 150, 160), "fridge"),
    "refrigerator_steel": _box_appliance((175, 180, 190), (90, 90, 100), "fridge"),
    "wall_clock": _wall_clock,
    "vase": _vase(False),
    "vase_flowers": _vase(True),
    "hair_drier": _hair_drier((60, 60, 70)),
    "hair_drier_pink": _hair_drier((235, 130, 170)),
}


def draw_sprite(name: str, size: int = 128) -> Image.Image:
    """Draw the named sprite; returns an RGBA image cropped to its alpha, max side ``size``."""
    if name not in DRAWERS:
        raise ValueError(f"unknown drawn sprite {name!r}")
    pen = _Pen()
    DRAWERS[name](pen)
    im = pen.im.crop(pen.im.getchannel("A").getbbox())
    scale = size / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)

"""Small charts drawn with Pillow (no plotting library needed), for the benchmark run folders."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..world.sheet import wrap_to_width

BAR = (31, 119, 180)


def bar_chart(labels: Sequence[str], values: Sequence[float], *, errors: Sequence[float] | None = None,
              title: str = "", ymax: float | None = None,
              size: tuple[int, int] = (520, 320)) -> Image.Image:  # fmt: skip
    """One bar per label, its value written above it, with ``± errors`` as whiskers if given.

    The axis runs from 0 to ``ymax`` (default: the largest value or value + error, x 1.1).
    """
    if not labels or len(labels) != len(values):
        raise ValueError(f"bar_chart needs one value per label, got {len(labels)} labels and {len(values)} values")
    if errors is not None and len(errors) != len(values):
        raise ValueError(f"bar_chart needs one error per value, got {len(errors)} for {len(values)}")
    errs = list(errors) if errors is not None else [0.0] * len(values)
    if any(v < 0 for v in values) or any(e < 0 for e in errs):
        raise ValueError("bar_chart draws values >= 0 with errors >= 0")
    top = ymax if ymax is not None else (max(v + e for v, e in zip(values, errs, strict=True)) * 1.1 or 1.0)
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=12)
    heading = wrap_to_width(title, font, w - 20) if title else []
    for k, line in enumerate(heading):
        d.text((10, 8 + 15 * k), line, fill=(0, 0, 0), font=font)
    x0, y0 = 56, 26 + 15 * len(heading)
    pw, ph = w - x0 - 20, h - y0 - 30
    d.rectangle([x0, y0, x0 + pw, y0 + ph], outline=(0, 0, 0))

    def y(v: float) -> float:
        return y0 + ph - min(v, top) / top * ph

    for k in range(5):
        v = top * k / 4
        d.line([x0 - 4, y(v), x0, y(v)], fill=(0, 0, 0))
        d.text((x0 - 48, y(v) - 7), f"{v:.3g}", fill=(0, 0, 0), font=font)
    slot = pw / len(values)
    for i, (lab, v, e) in enumerate(zip(labels, values, errs, strict=True)):
        cx = x0 + (i + 0.5) * slot
        half = slot * 0.3
        if v > 0:  # (a zero-height rectangle would still fill one row)
            d.rectangle([cx - half, y(v), cx + half, y0 + ph], fill=BAR)
        if e > 0:
            d.line([cx, y(v - e if v > e else 0), cx, y(v + e)], fill=(0, 0, 0), width=2)
            for yy in (y(v + e), y(max(v - e, 0))):
                d.line([cx - 6, yy, cx + 6, yy], fill=(0, 0, 0), width=2)
        text = f"{v:.3g}" + (f" ± {e:.2g}" if e > 0 else "")  # above the bar, or above its whisker
        tx = min(max(cx - font.getlength(text) / 2, x0 + 2), w - 2 - font.getlength(text))
        d.text((tx, max(y(v + e) - 16, y0 + 2)), text, fill=(0, 0, 0), font=font)
        d.text((cx - font.getlength(lab) / 2, y0 + ph + 6), lab, fill=(0, 0, 0), font=font)
    return img


PRECISION, RECALL = (31, 119, 180), (230, 120, 20)


def per_class_chart(per_class: dict[str, dict], *, title: str = "", columns: int = 2,
                    row_height: int = 15, column_width: int = 480) -> Image.Image:  # fmt: skip
    """Presence precision (blue) and recall (orange) of every class on an axis from the lowest value
    (rounded down to a tenth) to 1, one row per class (its name and support: renders showing it),
    worst F1 first, read down the columns. Input: the ``per_class`` of
    :func:`fgdm.training.judge.evaluate_judge`."""
    if not per_class:
        raise ValueError("per_class_chart needs at least one class")
    if columns < 1 or row_height < 8 or column_width < 200:
        raise ValueError(f"per_class_chart: columns >= 1, row_height >= 8, column_width >= 200, got "
                         f"{columns}, {row_height}, {column_width}")  # fmt: skip

    def f1(m: dict) -> float:
        p, r = m["precision"], m["recall"]
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    names = sorted(per_class, key=lambda k: (f1(per_class[k]), k))
    lowest = min(min(m["precision"], m["recall"]) for m in per_class.values())
    lo = min(max(0.0, int(lowest * 10) / 10), 0.9)
    rows = -(-len(names) // columns)
    font = ImageFont.load_default(size=11)
    heading = wrap_to_width(title, font, columns * column_width - 20) if title else []
    top = 10 + 14 * len(heading) + 18  # title, then the legend and axis labels
    img = Image.new("RGB", (columns * column_width, top + rows * row_height + 10), "white")
    d = ImageDraw.Draw(img)
    for k, line in enumerate(heading):
        d.text((10, 6 + 14 * k), line, fill=(0, 0, 0), font=font)
    label_w = 150
    for c in range(columns):
        x0, x1 = c * column_width + label_w, (c + 1) * column_width - 20

        def x(v: float, x0=x0, x1=x1) -> float:
            return x0 + (v - lo) / (1 - lo) * (x1 - x0)

        for v in sorted({lo, *(k / 10 for k in range(int(lo * 10) + 1, 11))}):
            d.line([x(v), top - 2, x(v), top + rows * row_height], fill=(200, 200, 200))
            d.text((x(v) - 8, top - 16), f"{v:.1f}", fill=(0, 0, 0), font=font)
        for i, name in enumerate(names[c * rows : (c + 1) * rows]):
            m, cy = per_class[name], top + i * row_height + row_height / 2
            d.text((c * column_width + 6, cy - 6), f"{name} ({m.get('support', 0)})", fill=(0, 0, 0), font=font)
            p, r = m["precision"], m["recall"]
            d.line([x(min(p, r)), cy, x(max(p, r)), cy], fill=(120, 120, 120))
            for v, colour in ((p, PRECISION), (r, RECALL)):
                d.ellipse([x(v) - 3, cy - 3, x(v) + 3, cy + 3], fill=colour)
    d.text((10, top - 16), "precision", fill=PRECISION, font=font)
    d.text((70, top - 16), "recall", fill=RECALL, font=font)
    return img

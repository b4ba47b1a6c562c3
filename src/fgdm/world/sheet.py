"""Contact sheets: one row per sample (image | seg | depth | normal | sketch), captions underneath."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def contact_sheet(
    rows: list[list[np.ndarray]],
    *,
    headers: list[str] | None = None,
    captions: list[str] | None = None,
    tile_notes: list[list[list[tuple[str, tuple[int, int, int]]]]] | None = None,
    cell: int = 128,
) -> Image.Image:
    """Lay out ``rows`` of (H, W, 3) uint8 images as a grid of ``cell``-px tiles.

    Args:
        rows: one list of images per row (all rows the same length).
        headers: column titles drawn above the first row.
        captions: one text per row, wrapped under it.
        tile_notes: per row, per tile, lines of ``(text, rgb)`` drawn under that tile, each wrapped
            within the cell (e.g. a verdict per object, in green or red).
        cell: tile side in pixels (images are resized to it).
    """
    if not rows:
        raise ValueError("rows is empty: nothing to lay out")
    ncol = len(rows[0])
    font = ImageFont.load_default(size=max(10, cell // 11))
    line_h = max(12, cell // 9)
    chars = max(20, int(ncol * cell / (line_h * 0.55)))
    wrapped = [textwrap.wrap(c, chars)[:3] for c in captions] if captions else [[] for _ in rows]
    # headers wider than a cell wrap within it (at most 3 lines), so neighbours never overlap
    heads = [wrap_to_width(h, font, cell - 8)[:3] for h in headers] if headers else []
    head_h = max(len(h) for h in heads) * line_h + 6 if heads else 0
    if tile_notes is not None and len(tile_notes) != len(rows):
        raise ValueError(f"tile_notes needs one list per row ({len(rows)}), got {len(tile_notes)}")
    notes = [[[(line, rgb) for text, rgb in tile for line in wrap_to_width(text, font, cell - 6)] for tile in row]
             for row in tile_notes] if tile_notes else [[] for _ in rows]  # fmt: skip
    notes_h = [max((len(t) for t in row), default=0) * line_h + (4 if any(row) else 0) for row in notes]
    heights = [cell + n + (len(w) * line_h + 6 if captions else 4) for w, n in zip(wrapped, notes_h, strict=True)]
    sheet = Image.new("RGB", (ncol * cell, head_h + sum(heights)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, lines in enumerate(heads):
        for k, line in enumerate(lines):
            draw.text((j * cell + 4, 3 + k * line_h), line, fill=(0, 0, 0), font=font)
    y = head_h
    for row, lines, tnotes, nh, h in zip(rows, wrapped, notes, notes_h, heights, strict=True):
        if len(row) != ncol:
            raise ValueError(f"every row needs {ncol} images, got {len(row)}")
        for j, img in enumerate(row):
            tile = Image.fromarray(np.asarray(img, dtype=np.uint8)).convert("RGB").resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (j * cell, y))
        for j, tile_lines in enumerate(tnotes):
            for k, (line, rgb) in enumerate(tile_lines):
                draw.text((j * cell + 3, y + cell + 2 + k * line_h), line, fill=tuple(rgb), font=font)
        for k, line in enumerate(lines):
            draw.text((4, y + cell + nh + 3 + k * line_h), line, fill=(20, 20, 20), font=font)
        y += h
    return sheet


def candidate_sheet(tiles: list[np.ndarray], candidates: list, chosen: int, *, per_row: int = 5,
                    cell: int = 128) -> Image.Image:  # fmt: skip
    """A search's candidates (seg maps or images) in a grid, ``per_row`` to a row, each with its
    index, recall and missing objects under it; the chosen one's note in green. ``candidates``:
    objects with ``index``, ``recall`` and ``missing`` (SBPC's or best-of-N's)."""
    if len(tiles) != len(candidates) or not tiles:
        raise ValueError(f"need one tile per candidate, got {len(tiles)} tiles and {len(candidates)} candidates")
    blank = np.full_like(np.asarray(tiles[0]), 255)
    ncol = min(per_row, len(tiles))
    rows, notes = [], []
    for start in range(0, len(tiles), ncol):
        part = list(zip(tiles[start : start + ncol], candidates[start : start + ncol], strict=True))
        rows.append([np.asarray(t) for t, _ in part] + [blank] * (ncol - len(part)))
        notes.append([[(f"#{c.index} recall {c.recall:.2f}" + (" (chosen)" if c.index == chosen else ""),
                        (0, 128, 0) if c.index == chosen else (0, 0, 0))]
                      + ([(f"missing: {', '.join(c.missing)}", (160, 0, 0))] if c.missing else [])
                      for _, c in part] + [[] for _ in range(ncol - len(part))])  # fmt: skip
    return contact_sheet(rows, tile_notes=notes, cell=cell)


def wrap_to_width(text: str, font, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels: broken at spaces, and inside a word only
    where one word alone is too wide."""
    lines: list[str] = []
    for word in text.split():
        while font.getlength(word) > width and len(word) > 1:  # hard-break a word too wide for a line
            k = 1
            while k < len(word) and font.getlength(word[: k + 1]) <= width:
                k += 1
            if lines and font.getlength(lines[-1] + " " + word[:k]) <= width:
                lines[-1] += " " + word[:k]
            else:
                lines.append(word[:k])
            word = word[k:]
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def save_sheet(sheet: Image.Image, path: str | Path) -> Path:
    """Write ``sheet`` as a PNG at ``path`` atomically (a half-written file never has that name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    sheet.save(tmp)
    tmp.replace(path)
    return path

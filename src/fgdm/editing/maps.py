"""Object-level edits of condition maps, applied consistently to every map of a sample.

A :class:`MapSample` holds a segmentation (class ids), an instance map (0 = no object), and
optionally disparity (normalised inverse depth in [0, 1], near = 1) and a sketch (soft edges in
[0, 1]); normals are derived from the disparity after edits, so they always agree with it.

Objects are addressed by instance id (``3``), category name (``"dog"``: the largest instance of
that class) or ``"dog#2"`` (the second-largest). Rules, the same for every operation:

- an object moved, resized, flipped, duplicated or pasted is drawn where it is *nearer* than what
  is there (disparity comparison), always over stuff; with no disparity map it is drawn on top;
- the area an object leaves is filled with the background class that surrounds it (the most
  common stuff class on a ring around it), its disparity by smooth interpolation from the ring,
  and its sketch edges are erased;
- pixels moved out of the frame are clipped with a warning; an edit that would leave nothing of
  the object in the frame is an error;
- an object moved, resized or flipped keeps its instance id (so a list of edits can address it by
  id throughout); a duplicated or pasted copy gets a new one.

Every operation returns a new sample and leaves its input untouched; :class:`EditLog` records
operations as plain dicts so that :func:`apply_edits` replays them exactly.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..world.categories import VOID_ID, category
from ..world.conditions import normals_from_depth, thing_instances

log = logging.getLogger(__name__)


@dataclass
class MapSample:
    seg: np.ndarray  # (H, W) uint8 class ids
    instance: np.ndarray  # (H, W) int32 instance ids, 0 = no object
    disparity: np.ndarray | None = None  # (H, W) float32 in [0, 1], near = 1
    sketch: np.ndarray | None = None  # (H, W) float32 in [0, 1]

    def __post_init__(self) -> None:
        self.seg = np.asarray(self.seg, dtype=np.uint8)
        self.instance = np.asarray(self.instance, dtype=np.int32)
        for name in ("disparity", "sketch"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, np.asarray(v, dtype=np.float32))
        shapes = {a.shape for a in (self.seg, self.instance, self.disparity, self.sketch) if a is not None}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"every map must be (H, W) and of one size, got shapes {sorted(shapes)}")

    @classmethod
    def from_labels(cls, seg: np.ndarray, disparity=None, sketch=None) -> MapSample:
        """A sample from a (generated) segmentation map: instances are the connected components
        of each thing class."""
        return cls(seg, thing_instances(seg), disparity, sketch)

    @classmethod
    def from_render(cls, render) -> MapSample:
        from ..world.conditions import normalize_depth

        return cls(render.seg, render.instance.astype(np.int32), normalize_depth(render.depth), render.sketch)

    @property
    def normals(self) -> np.ndarray | None:
        return None if self.disparity is None else normals_from_depth(self.disparity)

    def objects(self) -> dict[int, tuple[str, int]]:
        """Instance id -> (category name, pixel count)."""
        ids, counts = np.unique(self.instance[self.instance > 0], return_counts=True)
        out = {}
        for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
            cls_id = int(np.bincount(self.seg[self.instance == i]).argmax())
            out[i] = (category(cls_id).name, c)
        return out

    def copy(self) -> MapSample:
        return copy.deepcopy(self)

    def resized(self, shape: tuple[int, int]) -> MapSample:
        """The sample at ``shape`` (H, W): class and instance ids nearest, disparity and sketch bilinear."""
        h, w = int(shape[0]), int(shape[1])
        if (h, w) == self.seg.shape:
            return self.copy()

        def nearest(a):
            return np.asarray(Image.fromarray(np.asarray(a, np.int32)).resize((w, h), Image.NEAREST))

        def bilinear(a):
            return None if a is None else np.asarray(Image.fromarray(np.asarray(a, np.float32)).resize((w, h), Image.BILINEAR))

        return MapSample(nearest(self.seg), nearest(self.instance), bilinear(self.disparity), bilinear(self.sketch))


EDGE_WIDTH = 2  # sketch edges extend this far outside an object's mask

_TARGET = re.compile(r"^(?P<name>[^#]+?)(?:#(?P<k>\d+))?$")


def resolve(sample: MapSample, target: str | int) -> int:
    """Instance id of ``target`` (an id, ``"dog"`` = the largest dog, ``"dog#2"`` = the second)."""
    objs = sample.objects()
    if isinstance(target, (int, np.integer)) or (isinstance(target, str) and target.isdigit()):
        i = int(target)
        if i not in objs:
            raise ValueError(f"no object with instance id {i}; objects: {_listing(objs, sample)}")
        return i
    m = _TARGET.match(str(target).strip())
    if m is None:
        raise ValueError(f"object {target!r} is not an instance id, a category name or name#k")
    name = category(m["name"].strip()).name  # raises for unknown names
    k = int(m["k"] or 1)
    same = sorted((i for i, (n, _) in objs.items() if n == name), key=lambda i: (-objs[i][1], i))
    if not same:
        raise ValueError(f"no {name!r} in this sample; objects: {_listing(objs, sample)}")
    if not 1 <= k <= len(same):
        raise ValueError(f"{target!r}: there are {len(same)} {name!r} object(s)")
    return same[k - 1]


def _listing(objs: dict, sample: MapSample | None = None, limit: int = 12) -> str:
    """"dog (ids 3, 7), cat (id 5), ..." — at most ``limit`` categories, largest objects first; for
    a map without objects (a sampled map may hold only background), "none" and, given the
    ``sample``, the classes it holds, so the user sees why."""
    by: dict[str, list[int]] = {}
    for i, (n, _) in sorted(objs.items(), key=lambda kv: -kv[1][1]):
        by.setdefault(n, []).append(i)
    parts = [f"{n} (id{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})"
             for n, ids in list(by.items())[:limit]]  # fmt: skip
    more = f", and {len(by) - limit} more categories" if len(by) > limit else ""
    if parts:
        return ", ".join(parts) + more
    if sample is None:
        return "none"
    stuff = [category(int(c)).name for c in np.unique(sample.seg) if int(c) != VOID_ID]
    return f"none (the map holds only {', '.join(stuff) or 'void'})"


# ----------------------------------------------------------------------------- filling and drawing


def _ring(mask: np.ndarray, width: int = 2) -> np.ndarray:
    grown = mask.copy()
    for _ in range(width):
        g = grown.copy()
        g[1:] |= grown[:-1]
        g[:-1] |= grown[1:]
        g[:, 1:] |= grown[:, :-1]
        g[:, :-1] |= grown[:, 1:]
        grown = g
    return grown & ~mask


def _fill(s: MapSample, mask: np.ndarray) -> None:
    """Fill ``mask`` (in place) with the surrounding background: stuff class, disparity, no edges."""
    ring = _ring(mask, 2)
    stuff = [c for c in s.seg[ring] if c != 255 and not category(int(c)).is_thing]
    if not stuff:  # surrounded by things: take the most common stuff class anywhere
        stuff = [c for c in s.seg.ravel() if c != 255 and not category(int(c)).is_thing] or [255]
    s.seg[mask] = np.bincount(np.asarray(stuff, dtype=np.int64)).argmax()
    s.instance[mask] = 0
    if s.disparity is not None:
        s.disparity = fill_disparity(s.disparity, mask)
    if s.sketch is not None:  # the object's outline lies on both sides of its border
        s.sketch[mask | _ring(mask, EDGE_WIDTH)] = 0.0


def fill_disparity(d: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill ``mask`` by interpolating each row between the nearest known pixels left and right
    (exact for the ground plane and the sky, whose disparity is constant along a row), falling back
    to columns for rows with no known pixel, then smoothing the fill lightly."""
    d = d.copy()
    known = ~mask
    xs = np.arange(d.shape[1])
    rows_done = np.zeros(d.shape[0], bool)
    for y in np.nonzero(mask.any(1))[0]:
        if known[y].any():
            d[y, mask[y]] = np.interp(xs[mask[y]], xs[known[y]], d[y, known[y]])
            rows_done[y] = True
    left = mask & ~rows_done[:, None]
    if left.any():
        ys = np.arange(d.shape[0])
        ok = ~left
        for x in np.nonzero(left.any(0))[0]:
            if ok[:, x].any():
                d[left[:, x], x] = np.interp(ys[left[:, x]], ys[ok[:, x]], d[ok[:, x], x])
    for _ in range(8):
        p = np.pad(d, 1, mode="edge")
        avg = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4
        d[mask] = avg[mask]
    return d


def _place(s: MapSample, layer: dict, dx: int, dy: int, what: str, inst: int | None = None) -> int:
    """Draw an object layer (from :func:`_cut`) at offset (dx, dy) as instance ``inst`` (default: a
    new id, for a copy); returns the id."""
    h, w = s.seg.shape
    ys, xs = np.nonzero(layer["mask"])
    ny, nx = ys + dy, xs + dx
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    if not inside.any():
        raise ValueError(f"{what} would leave the object entirely out of the frame")
    if not inside.all():
        log.warning("%s: %d of %d object pixels fall outside the frame and are clipped", what, int((~inside).sum()),
                    len(ys))  # fmt: skip
    ys, xs, ny, nx = ys[inside], xs[inside], ny[inside], nx[inside]
    over_thing = s.instance[ny, nx] > 0
    visible = np.ones(len(ys), bool)
    if s.disparity is not None and layer["disparity"] is not None:
        visible = ~over_thing | (layer["disparity"][ys, xs] >= s.disparity[ny, nx])
    new_id = int(s.instance.max()) + 1 if inst is None else inst
    ys, xs, ny, nx = ys[visible], xs[visible], ny[visible], nx[visible]
    s.seg[ny, nx] = layer["seg"][ys, xs]
    s.instance[ny, nx] = new_id
    if s.disparity is not None and layer["disparity"] is not None:
        s.disparity[ny, nx] = layer["disparity"][ys, xs]
    if s.sketch is not None and layer["sketch"] is not None:
        s.sketch[ny, nx] = layer["sketch"][ys, xs]
        ry, rx = np.nonzero(layer["ring"])  # the outline just outside the object: added, never erasing
        qy, qx = ry + dy, rx + dx
        ok = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        ry, rx, qy, qx = ry[ok], rx[ok], qy[ok], qx[ok]
        s.sketch[qy, qx] = np.maximum(s.sketch[qy, qx], layer["sketch"][ry, rx])
    return new_id


def _cut(s: MapSample, inst: int) -> dict:
    mask = s.instance == inst
    return {"mask": mask, "ring": _ring(mask, EDGE_WIDTH), "seg": s.seg.copy(), "disparity": None if s.disparity is None else s.disparity.copy(),
            "sketch": None if s.sketch is None else s.sketch.copy()}  # fmt: skip


def _transform(layer: dict, fn) -> dict:
    """Apply a geometric transform to every array of a layer (nearest for labels and mask)."""
    out = {k: fn(layer[k].astype(np.uint8), Image.NEAREST) > 0 for k in ("mask", "ring")}
    out["seg"] = fn(layer["seg"], Image.NEAREST)
    for k in ("disparity", "sketch"):
        out[k] = None if layer[k] is None else fn(layer[k], Image.BILINEAR)
    return out


# ----------------------------------------------------------------------------- operations


def move(s: MapSample, target, dx: int, dy: int) -> MapSample:
    out = s.copy()
    inst = resolve(out, target)
    layer = _cut(out, inst)
    _fill(out, layer["mask"])
    _place(out, layer, int(dx), int(dy), f"move {target}", inst)  # the same object: it keeps its id
    return out


def duplicate(s: MapSample, target, dx: int, dy: int) -> MapSample:
    out = s.copy()
    _place(out, _cut(out, resolve(out, target)), int(dx), int(dy), f"duplicate {target}")
    return out


def paste(s: MapSample, source: MapSample, target, dx: int = 0, dy: int = 0) -> MapSample:
    """Copy object ``target`` of ``source`` into ``s``, offset by (dx, dy) pixels of ``s``. A source
    of another size is resized to ``s``'s first (:meth:`MapSample.resized`), so the object keeps
    its share of the frame."""
    if source.seg.shape != s.seg.shape:
        log.info("paste: the source's maps are %s, this sample's %s: resized to it", source.seg.shape, s.seg.shape)
        source = source.resized(s.seg.shape)
    out = s.copy()
    try:
        inst = resolve(source, target)
    except ValueError as e:
        raise ValueError(f"paste: {str(e).replace('this sample', 'the source sample', 1)}") from None
    layer = _cut(source, inst)
    if out.disparity is None:
        layer["disparity"] = None
    if out.sketch is None:
        layer["sketch"] = None
    _place(out, layer, int(dx), int(dy), f"paste {target}")
    return out


def _bbox_centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2


def resize(s: MapSample, target, scale: float) -> MapSample:
    """Scale an object about the centre of its box (labels nearest, disparity/sketch bilinear)."""
    if not 0.05 <= float(scale) <= 20:
        raise ValueError(f"resize scale must be in [0.05, 20], got {scale!r}")
    out = s.copy()
    inst = resolve(out, target)
    layer = _cut(out, inst)
    cx, cy = _bbox_centre(layer["mask"])
    h, w = out.seg.shape
    inv = 1 / float(scale)
    coeffs = (inv, 0, cx - inv * cx, 0, inv, cy - inv * cy)  # output -> input pixel mapping

    def fn(a, resample):
        mode = "F" if a.dtype.kind == "f" else "L"
        return np.asarray(Image.fromarray(a.astype(np.float32 if mode == "F" else np.uint8), mode)
                          .transform((w, h), Image.AFFINE, coeffs, resample=resample))  # fmt: skip

    _fill(out, layer["mask"])
    _place(out, _transform(layer, fn), 0, 0, f"resize {target}", inst)
    return out


def flip(s: MapSample, target) -> MapSample:
    """Mirror an object left-right within its own box."""
    out = s.copy()
    inst = resolve(out, target)
    layer = _cut(out, inst)
    _ys, xs = np.nonzero(layer["mask"])
    x0, x1 = xs.min(), xs.max()

    def fn(a, resample):
        b = a.copy()
        b[:, x0 : x1 + 1] = a[:, x0 : x1 + 1][:, ::-1]
        return b

    _fill(out, layer["mask"])
    _place(out, _transform(layer, fn), 0, 0, f"flip {target}", inst)
    return out


def delete(s: MapSample, target) -> MapSample:
    out = s.copy()
    _fill(out, out.instance == resolve(out, target))
    return out


def change_class(s: MapSample, target, new: str) -> MapSample:
    """Relabel an object as another thing class (shape, depth and edges kept)."""
    c = category(new)
    if not c.is_thing:
        raise ValueError(f"change_class: {new!r} is a stuff class; objects can only become things")
    out = s.copy()
    out.seg[out.instance == resolve(out, target)] = c.id
    return out


def scribble_text(s: MapSample, text: str, x: int | None = None, y: int | None = None, size: int | None = None) -> MapSample:
    """Write ``text`` onto the sketch map (white strokes; default: centred, 1/6 of the height)."""
    if s.sketch is None:
        raise ValueError("this sample has no sketch map to write on")
    if not text.strip():
        raise ValueError("text is empty")
    out = s.copy()
    h, w = out.sketch.shape
    font = ImageFont.load_default(size=size or max(8, h // 6))
    img = Image.new("L", (w, h), 0)  # the strokes alone; the rest of the sketch stays bit-exact
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    px = (w - (x1 - x0)) // 2 if x is None else int(x)
    py = (h - (y1 - y0)) // 2 if y is None else int(y)
    draw.text((px - x0, py - y0), text, fill=255, font=font)
    out.sketch = np.maximum(out.sketch, np.asarray(img, dtype=np.float32) / 255.0)
    return out


OPS = {"move": move, "duplicate": duplicate, "resize": resize, "flip": flip, "delete": delete,
       "change_class": change_class, "text": scribble_text}  # fmt: skip


@dataclass
class EditLog:
    """The edits made to a sample, as replayable dicts (``{"op": "move", "target": "dog", ...}``)."""

    edits: list[dict] = field(default_factory=list)

    def apply(self, s: MapSample, op: str, **kw) -> MapSample:
        if op not in OPS:
            raise ValueError(f"unknown edit {op!r}; edits are {sorted(OPS)}")
        out = OPS[op](s, **kw)
        self.edits.append({"op": op, **kw})
        return out


def apply_edits(s: MapSample, edits: list[dict]) -> MapSample:
    """Replay a list of edits (e.g. from a run's record). A ``paste`` edit names its source as
    ``source_run`` (an FG-DM run folder, or a rendered or generated export: :func:`paste_source`)
    and ``source_sample``."""
    for e in edits:
        e = dict(e)
        op = e.pop("op", None)
        if op == "paste":
            source = paste_source(e.pop("source_run"), int(e.pop("source_sample", 0)))
            s = paste(s, source, **e)
            continue
        if op not in OPS:
            raise ValueError(f"unknown edit {op!r}; edits are {sorted([*OPS, 'paste'])}")
        try:
            s = OPS[op](s, **e)
        except TypeError as err:  # wrong or missing arguments in a hand-written edit list
            raise ValueError(f"edit {op!r}: {err}") from None
    return s


# ----------------------------------------------------------------------------- runs


def sample_from_run(run_dir, index: int = 0) -> tuple[MapSample, dict]:
    """The condition maps of sample ``index`` of an FG-DM run folder (``fgdm generate --factors``
    or ``--sbpc``), and the run's record. The seg map is required; depth and sketch are used if
    the run has them (normals are always re-derived from depth), resized to the seg map's size."""
    import json
    from pathlib import Path

    from ..world.conditions import decode_depth, decode_segmentation, decode_sketch, resize_image

    root = Path(run_dir)
    try:
        rec = json.loads((root / "record.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"run {str(run_dir)!r} has no readable record.json ({e})") from None
    if rec.get("kind") not in ("generate-fgdm", "generate-sbpc", "edit"):
        raise ValueError(f"run {str(run_dir)!r} is a {rec.get('kind')!r} run; edit needs an FG-DM run (generate --factors/--sbpc)")
    n = len(rec.get("seeds", [0])) if rec.get("kind") == "generate-fgdm" else 1
    if not 0 <= index < n:
        raise ValueError(f"sample must be in 0..{n - 1} for run {str(run_dir)!r}, got {index}")

    def load(name):
        f = root / f"{name}-{index:03d}.png"
        return np.asarray(Image.open(f).convert("RGB")) if f.exists() else None

    seg = load("seg")
    if seg is None:
        raise ValueError(f"run {str(run_dir)!r} has no seg map for sample {index}; edits need one (sample seg with --factors)")
    # the maps of one sample may be drawn at different sizes (an SBPC run keeps its chosen seg map at
    # the image's size and samples depth at the depth factor's); edits work on the seg map's grid
    depth, sketch = (m if m is None or m.shape[:2] == seg.shape[:2] else resize_image(m, seg.shape[1::-1])
                     for m in (load("depth"), load("sketch")))  # fmt: skip
    s = MapSample.from_labels(decode_segmentation(seg, tolerance=2, min_area=0.0),
                              None if depth is None else decode_depth(depth),
                              None if sketch is None else decode_sketch(sketch))  # fmt: skip
    return s, rec


def sample_from_export(folder, index: int = 0) -> MapSample:
    """Sample ``index`` of an export folder, rendered (``fgdm world render``) or generated (``fgdm
    generate --export-dataset``): its class ids and instances, and its disparity and sketch where
    the export has them (a render's instances are its objects; a generated one's, the connected
    components of each thing class)."""
    from pathlib import Path

    from ..world.conditions import decode_depth, decode_sketch
    from ..world.export import MARKER, read_samples

    root = Path(folder)
    if not (root / MARKER).is_file():
        raise ValueError(f"{str(folder)!r} is not an export folder (no {MARKER})")
    recs = read_samples(root)
    if not 0 <= index < len(recs):
        raise ValueError(f"sample must be in 0..{len(recs) - 1} for export {str(folder)!r}, got {index}")
    files = recs[index].get("files", {})

    def load(name, rgb=False):
        if name not in files:
            return None
        try:
            im = Image.open(root / files[name])
            return np.asarray(im.convert("RGB") if rgb else im)
        except OSError as e:  # a missing or broken file of the export: the user's input, not a traceback
            raise ValueError(f"export {str(folder)!r}, sample {index}: cannot read {files[name]!r} ({e})") from None

    seg = load("seg_ids")
    if seg is None:
        raise ValueError(f"export {str(folder)!r} has no class ids (seg_ids) for sample {index}")
    inst, depth, sketch = load("instance"), load("depth", rgb=True), load("sketch", rgb=True)
    return MapSample(seg, thing_instances(seg) if inst is None else inst, None if depth is None else decode_depth(depth),
                     None if sketch is None else decode_sketch(sketch))  # fmt: skip


def paste_source(folder, index: int = 0) -> MapSample:
    """The maps a ``paste`` takes an object from: sample ``index`` of an export folder (it holds
    ``world.json``: :func:`sample_from_export`) or of an FG-DM run (:func:`sample_from_run`)."""
    from pathlib import Path

    from ..world.export import MARKER

    if (Path(folder) / MARKER).is_file():
        return sample_from_export(folder, index)
    if not (Path(folder) / "record.json").is_file():
        raise ValueError(f"paste source {str(folder)!r} is neither an FG-DM run (record.json) nor an export (world.json)")
    return sample_from_run(folder, index)[0]


def sample_conditions(s: MapSample) -> dict[str, np.ndarray]:
    """The sample's maps in the form the FG-DM pipeline takes as ``given`` conditions."""
    from ..world.conditions import encode_normals

    out: dict[str, np.ndarray] = {"seg": s.seg}
    if s.disparity is not None:
        out["depth"] = s.disparity
        out["normal"] = encode_normals(s.normals)
    if s.sketch is not None:
        out["sketch"] = s.sketch
    return out

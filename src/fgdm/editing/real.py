"""Editing real images through an FG-DM graph.

1. **Extract** the segmentation map of the image with the judge (the condition extraction model).
2. Edit the map, either
   - **semantically**, by text: DDIM-invert the map through the seg factor (at the factor's own
     size) with the source prompt, then regenerate it from that noise with the edited prompt
     (prompt swap on the inverted trajectory: ``replace`` a class by another, ``remove`` a class).
     By default only the named classes' region (dilated) is regenerated, the rest of the latent
     following the inverted path, and the map outside that region is the extracted one; or
   - **at object level**, with the map operations of :mod:`fgdm.editing.maps` (the prompt follows:
     :func:`map_edit_prompt`).
3. **Re-render** with the image factor: at *pixel level* (default), the image factor is inverted
   with the real image and its original map; by default the region where the map changed (dilated)
   is regenerated from that noise with the edited prompt and the factor's guidance while the rest
   follows the inverted path (blended latent diffusion on a DDIM inversion), so the background is
   kept where the map did not change. ``masked=False`` regenerates the whole image from the
   inverted noise without guidance (the earlier behaviour); ``pixel=False`` from fresh noise.

:func:`edit_metrics` measures what the issue asks: inversion reconstruction PSNR without an edit,
the judge's recall of the new classes in the edited region, and the PSNR of the unchanged region.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..models.judge import Judge
from ..pipelines.factor_graph import FactorGraphPipeline
from ..world.captions import article
from ..world.categories import STUFF, VOID_ID, category
from ..world.conditions import resize_image, resize_labels
from ..world.vocab import parse_prompt

# Whether a real-image edit gives the image factor the judge's depth too, when it reads depth
# (``edit_real_image(depth=None)``, ``fgdm edit-real`` without --depth/--no-depth): measured in
# docs/results.md, "Removing objects from real images, and real-image edits with the judge's depth".
DEPTH_DEFAULT = False

# The re-render's guidance when an edit only fills background in (every changed pixel of the map
# is a stuff class: a deleted object), unless one is given: nothing new is to be drawn there, and
# without guidance the region continues the inverted image and its surroundings. Measured on 50
# map deletions against guidance 2, 3, 7.5 (the image factor's) and 12: the closest rest of the
# image and as much removal (docs/results.md, "Removing objects from real images ...").
FILL_GUIDANCE = 1.0


_STUFF = np.zeros(256, bool)  # class id -> is a stuff class (void and unused ids are not)
_STUFF[[c.id for c in STUFF]] = True


def use_depth(pipe: FactorGraphPipeline, depth: bool | None) -> bool:
    """Whether a real-image edit gives ``pipe``'s image factor the judge's depth: ``depth`` as asked
    (an error if the image factor does not read depth), or for ``None`` :data:`DEPTH_DEFAULT` where
    it does."""
    parents = pipe.spec.factors["image"].parents if "image" in pipe.spec.factors else []
    if depth and "depth" not in parents:
        raise ValueError(f"depth: the graph's image factor does not read depth (its conditions: {list(parents)})")
    return bool(DEPTH_DEFAULT and "depth" in parents) if depth is None else bool(depth)


def extract_map(judge: Judge, image: Image.Image, size: int) -> np.ndarray:
    """The judge's class-id map of ``image`` at ``size`` x ``size``."""
    return judge.segment_images([image], size)[0]


def extract_depth(judge: Judge, image: Image.Image, size: int) -> np.ndarray:
    """The judge's disparity map of ``image`` at ``size`` x ``size`` (float32, normalised inverse
    depth in [0, 1], near = 1: what a given depth condition reads)."""
    return judge.depth_images([image], size)[0]


def text_edit_depth(source: np.ndarray, edited: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The disparity map that goes with a text edit of the seg map ``source`` -> ``edited``: where a
    pixel became a stuff class (a removed object, or background the seg factor drew), the
    disparity is filled from the background around it, as an object deletion fills it
    (:func:`~fgdm.editing.maps.fill_disparity`, interpolating between stuff pixels only);
    elsewhere it is kept, so a replaced object keeps the shape and depth of the one it replaces."""
    from .maps import fill_disparity

    mask = (source != edited) & _STUFF[edited]
    if not mask.any():
        return depth.copy()
    filled = fill_disparity(depth, mask | ~_STUFF[edited])  # things are not background to fill from
    return np.where(mask, filled, depth)


def fills_only(source: np.ndarray, edited: np.ndarray) -> bool:
    """Whether the edit ``source`` -> ``edited`` changed some pixels and made every one of them a
    stuff class (it only fills background in, as a deletion does)."""
    changed = source != edited
    return bool(changed.any() and _STUFF[edited[changed]].all())


def edit_prompt(prompt: str, replace: dict[str, str] | None = None, remove: list[str] | None = None) -> str:
    """The prompt with classes swapped (``{"dog": "cat"}``) or removed (the noun, its article or
    number, and the connector that tied it in: :func:`_rewrite`). Every named class must be
    mentioned by the prompt."""
    replace, remove = dict(replace or {}), list(remove or [])
    named = {m.category for m in parse_prompt(prompt).mentions}
    for c in [*replace, *remove]:
        name = category(c).name
        if name not in named:
            raise ValueError(f"the prompt {prompt!r} does not mention {name!r}; it mentions {sorted(named)}")
    for new in replace.values():
        category(new)  # raises for unknown classes
    out = _rewrite(prompt, {category(k).name: category(v).name for k, v in replace.items()}, {category(c).name for c in remove})
    if not parse_prompt(out).things and parse_prompt(prompt).things:
        raise ValueError(f"removing {remove} from {prompt!r} leaves no object in the prompt")
    return out


_CONNECTOR = (r"(?:,\s*)?(?:and|with|next to|near|beside|behind|under|over|above|below|on|in front of|in|"
              r"to the (?:left|right) of)|,")  # fmt: skip


def _rewrite(prompt: str, replace: dict[str, str], remove: set[str]) -> str:
    """``prompt`` with mentions of ``replace``'s classes renamed and of ``remove``'s dropped, each
    dropped noun with its article or number and the connector that tied it to the rest: the one
    before it ("a lake with an orange" -> "a lake"), or after it when it opens the description
    ("a dog with a cat" -> "a cat", "a photo of a dog, a cat" -> "a photo of a cat")."""
    out = prompt
    for m in sorted(parse_prompt(prompt).mentions, key=lambda m: -m.start):  # right to left keeps earlier spans valid
        if m.category in replace:
            out = out[: m.start] + replace[m.category] + out[m.end :]
        elif m.category in remove:
            head = re.sub(r"(\b(a|an|the|one|two|three|four|five|some)\s+)$", "", out[: m.start], flags=re.I)
            tail = out[m.end :]
            opening = not head.strip() or re.search(r"\bof\s*$", head, flags=re.I)
            if opening:
                tail = re.sub(rf"^\s*(?:{_CONNECTOR})\s*", " ", tail, flags=re.I)
            else:
                head = re.sub(rf"\s*(?:{_CONNECTOR})\s*$", "", head, flags=re.I)
            out = head.rstrip() + (" " if head.strip() and tail[:1].isalnum() else "") + tail
    out = re.sub(r"\s+([,.])", r"\1", re.sub(r"\s{2,}", " ", out))
    return re.sub(r"^\s*(?:and|,)\s+|\s+(?:and|,)\s*$", "", out).strip()


def map_edit_prompt(prompt: str, source: np.ndarray, edited: np.ndarray) -> str:
    """The prompt for a map edited at object level, so the caption does not call back what the map
    lost: each thing class the prompt mentions that the edit removed from the map is replaced by a
    thing class the edit added (largest added first), the rest of the removed ones are dropped
    from the prompt and the rest of the added ones are appended ("... and a horse")."""
    had, has = set(np.unique(source).tolist()) - {VOID_ID}, set(np.unique(edited).tolist()) - {VOID_ID}
    mentioned = [m.category for m in parse_prompt(prompt).mentions]
    gone = [c for c in dict.fromkeys(mentioned) if category(c).is_thing and category(c).id in had - has]
    added = sorted((c for c in has - had if category(int(c)).is_thing), key=lambda c: (-int((edited == c).sum()), c))
    added = [category(int(c)).name for c in added]
    out = _rewrite(prompt, dict(zip(gone, added, strict=False)), set(gone[len(added) :]))
    for name in added[len(gone) :]:
        out += (" and " if out else "") + article(name) + name
    return out


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """A bool mask grown by ``radius`` pixels (a square structuring element)."""
    if radius <= 0:
        return np.asarray(mask, bool)
    t = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
    return torch.nn.functional.max_pool2d(t, 2 * radius + 1, 1, radius)[0, 0].numpy() > 0


def edit_margin(size: int) -> int:
    """How far (pixels) an edited region is grown before it is regenerated: one pixel per 32 of
    the map's side, enough to take in an object's outline and its shadow's edge."""
    return max(1, size // 32)


@dataclass
class RealEdit:
    source_map: np.ndarray  # the judge's map of the real image
    edited_map: np.ndarray
    image: Image.Image  # the re-rendered image
    prompt: str
    edited_prompt: str
    timings: dict[str, float] = field(default_factory=dict)
    source_depth: np.ndarray | None = None  # the judge's disparity map, when the re-render reads depth
    edited_depth: np.ndarray | None = None
    render_guidance: float | None = None  # the re-render's guidance (None: the image factor's own)


def semantic_map_edit(pipe: FactorGraphPipeline, labels: np.ndarray, prompt: str, edited_prompt: str, *,
                      region: np.ndarray | None = None, steps: int | None = None, guidance: float | None = None,
                      seed: int = 0, negative_prompt: str = "") -> np.ndarray:  # fmt: skip
    """Invert a map through the seg factor with ``prompt``; regenerate it with ``edited_prompt``.

    The factor runs at its own size (the map is resized to it and the result back). With a bool
    ``region`` (the map's shape), only that region is regenerated: the rest of the latent follows
    the inverted path, and outside ``region`` the result is ``labels`` exactly. ``guidance``: the
    seg factor's own by default, away from ``negative_prompt`` (classifier-free guidance's
    unconditional branch; e.g. the classes the edit removes).
    """
    size = labels.shape[0]
    spec = pipe.spec.factors["seg"]
    fsize = spec.size or size
    small = resize_labels(labels, fsize)
    path = pipe.invert_path("seg", small, prompt, size=fsize, steps=steps)
    out = pipe(edited_prompt, factors=["seg"], init_latents={"seg": path[0]}, sizes={"seg": fsize}, seed=seed,
               keep={"seg": (region, path)} if region is not None else None,
               steps={"seg": steps} if steps else None, negative_prompt=negative_prompt,
               guidance={"seg": guidance if guidance is not None else spec.guidance})  # fmt: skip
    new = resize_labels(out.labels[0], size)
    return np.where(region, new, labels) if region is not None else new


def changed_region(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> np.ndarray:
    """Where any condition map differs between ``before`` and ``after`` (same keys, same sizes;
    (H, W) or (H, W, C) arrays), as an (H, W) bool mask."""
    if set(before) != set(after):
        raise ValueError(f"before has maps {sorted(before)}, after {sorted(after)}")
    out = None
    for k in before:
        a, b = np.asarray(before[k]), np.asarray(after[k])
        if a.shape != b.shape:
            raise ValueError(f"map {k!r} is {a.shape} before and {b.shape} after")
        d = (a != b).any(axis=-1) if a.ndim == 3 else a != b
        out = d if out is None else out | d
    if out is None:
        raise ValueError("no maps to compare")
    return out


def render_region(pipe: FactorGraphPipeline, image: Image.Image, before: dict[str, np.ndarray],
                  after: dict[str, np.ndarray], prompt: str, edited_prompt: str | None = None, *, size: int,
                  steps: int | None = None, seed: int = 0, guidance: float | None = None) -> Image.Image:  # fmt: skip
    """Re-render ``image`` with the image factor where its conditions changed from ``before`` to
    ``after`` (:func:`changed_region`, grown by :func:`edit_margin`), keeping the rest: the factor
    is DDIM-inverted with the image, ``before`` and ``prompt``, and the region is regenerated from
    that noise with ``after``, ``edited_prompt`` and ``guidance`` (the factor's by default) while
    the rest of the latent follows the inverted path (:class:`~fgdm.sampling.KeepOutside`)."""
    region = changed_region(before, after)
    region = dilate(region, edit_margin(region.shape[0]))
    path = pipe.invert_path("image", image, prompt, given=before, size=size, steps=steps)
    g = guidance if guidance is not None else pipe.spec.factors["image"].guidance
    return pipe(edited_prompt or prompt, factors=["image"], given=after, sizes={"image": size}, seed=seed,
                steps={"image": steps} if steps else None, guidance={"image": g}, init_latents={"image": path[0]},
                keep={"image": (region, path)}).images[0]  # fmt: skip


def render_edit(pipe: FactorGraphPipeline, image: Image.Image, source: np.ndarray, edited: np.ndarray, prompt: str,
                *, edited_prompt: str | None = None, pixel: bool = True, masked: bool = True, steps: int | None = None,
                seed: int = 0, guidance: float | None = None, source_depth: np.ndarray | None = None,
                edited_depth: np.ndarray | None = None) -> Image.Image:  # fmt: skip
    """Re-render an edited seg map (and, given ``source_depth`` and ``edited_depth``, its disparity
    map) with the image factor.

    ``pixel``: from the image's own inverted noise (inverted with ``prompt`` and its source maps),
    so unchanged regions are kept. With ``masked`` (default) only the region where a map changed
    is regenerated (:func:`render_region`). Without it the whole image is regenerated from the
    inverted noise, without guidance. ``pixel=False``: from fresh noise with ``edited_prompt``.
    """
    size = source.shape[0]
    edited_prompt = edited_prompt or prompt
    if (source_depth is None) != (edited_depth is None):
        raise ValueError("give both source_depth and edited_depth, or neither")
    before, after = {"seg": source}, {"seg": edited}
    if source_depth is not None:
        before["depth"], after["depth"] = source_depth, edited_depth
    if pixel and masked:
        return render_region(pipe, image, before, after, prompt, edited_prompt, size=size, steps=steps, seed=seed,
                             guidance=guidance)  # fmt: skip
    kw = {"factors": ["image"], "given": after, "sizes": {"image": size}, "seed": seed,
          "steps": {"image": steps} if steps else None}  # fmt: skip
    if not pixel:
        g = guidance if guidance is not None else pipe.spec.factors["image"].guidance
        return pipe(edited_prompt, guidance={"image": g}, **kw).images[0]
    x_t = pipe.invert("image", image, prompt, given=before, size=size, steps=steps)
    g = guidance if guidance is not None else 1.0
    return pipe(edited_prompt, guidance={"image": g}, init_latents={"image": x_t}, **kw).images[0]


def edit_real_image(pipe: FactorGraphPipeline, judge: Judge, image: Image.Image, prompt: str, *,
                    replace: dict[str, str] | None = None, remove: list[str] | None = None, map_edits=None,
                    pixel: bool = True, masked: bool = True, steps: int | None = None, seed: int = 0,
                    guidance: float | None = None, depth: bool | None = None, negative: bool = True) -> RealEdit:  # fmt: skip
    """Extract, edit (by text and/or ``map_edits(MapSample) -> MapSample``), re-render.

    ``masked`` (default): a text edit regenerates only the named classes' region of the map, and
    the re-render only the region where the map changed (see :func:`semantic_map_edit`,
    :func:`render_edit`); a text edit then needs the judge to find each named class in the image.
    The re-render's prompt follows map edits too (:func:`map_edit_prompt`). ``guidance``: the
    re-render's; when None, :data:`FILL_GUIDANCE` for a masked pixel-level re-render of an edit
    that only fills background in (:func:`fills_only`), else :func:`render_edit`'s default.

    ``negative`` (default): a text edit's seg factor is guided away from the classes it removes
    or replaces (they are its negative prompt, "a dog, a cat": the negative guidance of
    LEDITS++-style edits), so that they do not come back in the region; ``False``: the empty
    negative prompt.

    ``depth``: also give the image factor the judge's disparity map, edited with the seg map (map
    edits move, scale, delete ... it as they do in ``fgdm edit``; a text edit fills it where a
    pixel became background: :func:`text_edit_depth`). Needs an image factor that reads depth;
    ``None`` (default): :data:`DEPTH_DEFAULT` where it does.
    """
    from .maps import MapSample

    if "seg" not in pipe.spec.factors or "image" not in pipe.spec.factors:
        raise ValueError(f"real-image editing needs seg and image factors; the graph has {list(pipe.spec.factors)}")
    if "seg" not in pipe.spec.factors["image"].parents:
        raise ValueError("the graph's image factor is not conditioned on seg")
    depth = use_depth(pipe, depth)
    if not (replace or remove or map_edits):
        raise ValueError("nothing to edit: give replace, remove or map edits")
    t0 = time.perf_counter()
    size = pipe.spec.factors["image"].size or pipe.native_size()
    source = extract_map(judge, image, size)
    source_depth = extract_depth(judge, image, size) if depth else None
    edited_prompt = edit_prompt(prompt, replace, remove) if (replace or remove) else prompt
    edited, edited_depth = source, source_depth
    t1 = time.perf_counter()
    if replace or remove:
        region = None
        if masked:
            ids = [category(c).id for c in [*(replace or {}), *(remove or [])]]
            missing = [category(i).name for i in ids if not (source == i).any()]
            if missing:
                seen = sorted(category(int(c)).name for c in np.unique(source) if c != VOID_ID)
                raise ValueError(f"the judge finds no {missing} in the image (it sees {seen}); a masked text edit "
                                 "regenerates the named classes' region only (masked=False, --no-mask: the whole map)")  # fmt: skip
            region = dilate(np.isin(source, ids), edit_margin(size))
        away = ", ".join(article(category(c).name) + category(c).name for c in [*(replace or {}), *(remove or [])])
        edited = semantic_map_edit(pipe, source, prompt, edited_prompt, region=region, steps=steps, seed=seed,
                                   negative_prompt=away if negative else "")  # fmt: skip
        if depth:
            edited_depth = text_edit_depth(source, edited, source_depth)
    if map_edits is not None:
        before = edited
        s = map_edits(MapSample.from_labels(edited, disparity=edited_depth))
        edited, edited_depth = s.seg, s.disparity
        edited_prompt = map_edit_prompt(edited_prompt, before, edited)
    t2 = time.perf_counter()
    if guidance is None and pixel and masked and fills_only(source, edited):
        guidance = FILL_GUIDANCE
    img = render_edit(pipe, image, source, edited, prompt, edited_prompt=edited_prompt, pixel=pixel, masked=masked,
                      steps=steps, seed=seed, guidance=guidance, source_depth=source_depth,
                      edited_depth=edited_depth)  # fmt: skip
    t3 = time.perf_counter()
    return RealEdit(source, edited, img, prompt, edited_prompt,
                    {"extract_s": t1 - t0, "map_edit_s": t2 - t1, "render_s": t3 - t2, "total_s": t3 - t0},
                    source_depth, edited_depth, guidance)  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of two uint8 images, over ``mask`` if given (inf for identical pixels)."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        if not mask.any():
            return float("nan")
        d = d[mask]
    mse = d.mean()
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def edit_metrics(pipe: FactorGraphPipeline, judge: Judge, image: Image.Image, prompt: str, result: RealEdit, *,
                 steps: int | None = None) -> dict:  # fmt: skip
    """Inversion reconstruction PSNR (no edit), unchanged-region PSNR, the judge's recall of each
    thing class new to the edited region (the fraction of those pixels it labels as that class),
    and for each thing class the edit took out of some pixels, the fraction of those pixels where
    the judge no longer sees it (``edited_region_removal``: 1 when a deleted or relabelled object is
    gone from the image, 0 when it is still drawn there) and where it sees background (a stuff
    class: ``edited_region_background``; 1 when a removed object left only background)."""
    size = result.source_map.shape[0]
    orig = resize_image(np.asarray(image.convert("RGB")), size)
    recon = render_edit(pipe, image, result.source_map, result.source_map, prompt, masked=False, steps=steps,
                        source_depth=result.source_depth, edited_depth=result.source_depth)  # fmt: skip
    before, after = {"seg": result.source_map}, {"seg": result.edited_map}
    if result.source_depth is not None:
        before["depth"], after["depth"] = result.source_depth, result.edited_depth
    changed = changed_region(before, after)
    new = np.asarray(result.image.convert("RGB"))
    judged = extract_map(judge, result.image, size)
    recall, removal, background = {}, {}, {}
    for cid in np.unique(result.edited_map[changed]).tolist():
        region = changed & (result.edited_map == cid)
        if cid != VOID_ID and category(int(cid)).is_thing:  # void: pixels a sampled map left undecoded
            recall[category(int(cid)).name] = round(float((judged[region] == cid).mean()), 4)
    for cid in np.unique(result.source_map[changed]).tolist():
        region = changed & (result.source_map == cid) & (result.edited_map != cid)
        if region.any() and cid != VOID_ID and category(int(cid)).is_thing:
            removal[category(int(cid)).name] = round(float((judged[region] != cid).mean()), 4)
            background[category(int(cid)).name] = round(float(_STUFF[judged[region]].mean()), 4)
    return {"reconstruction_psnr": round(psnr(np.asarray(recon.convert("RGB")), orig), 3),
            "unchanged_psnr": round(psnr(new, orig, ~changed[..., None].repeat(3, 2)), 3),
            "edited_fraction": round(float(changed.mean()), 4), "edited_region_recall": recall,
            "edited_region_removal": removal, "edited_region_background": background}  # fmt: skip


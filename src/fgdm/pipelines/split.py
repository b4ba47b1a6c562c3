"""Object-split rendering: the image factor draws a seg map one object at a time, in one trajectory.

Given a map of many objects, the image factor knows that each region holds a thing, but less and
less which of the caption's classes it is as the map holds more objects (docs/results.md, "How
binding falls with the number of objects"). Alone in its map, an object is drawn as itself in its
region most of the time. So :func:`split_render` runs the image factor as one batch of the graph:

- row 0: the whole caption and the whole map;
- one row per object of the caption that the map shows: a caption naming that object alone, in the
  prompt's own template ("a scene with a dog."), and the map with every other thing painted over
  with the map's commonest stuff class (:func:`object_alone`);

all rows from the same seed. At every step the rows' predictions are blended per latent cell
(:func:`blended_rows`): each object's row where the map shows that object (its class's share of the
cell, times ``1 - whole``), row 0 elsewhere (MultiDiffusion's region-based blend, with a map and a
caption per region). Every row then takes the same step, so all rows keep one latent and row 0's
image is the result. The cost is one image-factor pass per row: 1 + the number of objects shown;
with ``split_steps`` < 1 only the first steps are split, the rest run row 0 alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ..models.factors import class_fractions
from ..world.categories import VOID_ID, category
from ..world.vocab import parse_prompt
from .factor_graph import FactorGraphOutput, FactorGraphPipeline


def object_alone(seg: np.ndarray, obj: str) -> np.ndarray:
    """``seg`` (class ids) with every thing class but ``obj`` painted with the map's commonest stuff
    class (void where the map has no stuff)."""
    vals, counts = np.unique(seg, return_counts=True)
    stuff = [(c, v) for v, c in zip(vals.tolist(), counts.tolist(), strict=True) if v != VOID_ID and not category(v).is_thing]
    fill = max(stuff)[1] if stuff else VOID_ID
    other = [v for v in vals.tolist() if v != VOID_ID and category(v).is_thing and category(v).name != obj]
    return np.where(np.isin(seg, other), fill, seg).astype(seg.dtype)


def object_masks(objects: list[str], seg: np.ndarray, size: int, whole: float) -> tuple[list[str], torch.Tensor]:
    """The objects of ``objects`` that ``seg`` (class ids) shows, in order and once each, and (1 + n,
    size, size) weights summing to 1 in every cell: the whole prompt's row first, then each shown
    object's, its class's share of the cell times ``1 - whole``."""
    if not 0 <= whole <= 1:
        raise ValueError(f"whole: the whole prompt's weight inside the objects' regions must be in [0, 1], got {whole!r}")
    shares = class_fractions(torch.from_numpy(np.array(seg, dtype=np.int64))[None], (size, size))[0]  # a copy
    shown = [o for o in dict.fromkeys(objects) if shares[category(o).id].sum() > 0]
    own = (1 - whole) * torch.stack([shares[category(o).id] for o in shown]) if shown else torch.zeros(0, size, size)
    return shown, torch.cat([(1 - own.sum(0))[None], own])


def _first_rows(x, batch: int, k: int):
    """``x`` (a tensor, or a list, tuple or dict of them, as a UNet's arguments) with every tensor of
    ``batch`` rows cut to the first row of each group of ``k``; anything else as it is."""
    if isinstance(x, torch.Tensor):
        return x[::k] if x.ndim and x.shape[0] == batch else x
    if isinstance(x, (list, tuple)):
        return type(x)(_first_rows(v, batch, k) for v in x)
    if isinstance(x, dict):
        return {n: _first_rows(v, batch, k) for n, v in x.items()}
    return x


def _first_row_call(plain, k: int, sample: torch.Tensor, args: tuple, kwargs: dict):
    """``plain`` (a module's forward) on the first row of each group of ``k`` rows of ``sample``, its
    other batched arguments cut alike (:func:`_first_rows`)."""
    rows = sample.shape[0]
    return plain(sample[::k], *_first_rows(args, rows, k), **_first_rows(kwargs, rows, k))


def _repeat_rows(x, k: int):
    """``x`` (a tensor, or a list or tuple of them, as an adapter's or a ControlNet's output) with
    every row repeated ``k`` times in place."""
    if isinstance(x, torch.Tensor):
        return x.repeat_interleave(k, 0)
    if isinstance(x, (list, tuple)):
        return type(x)(_repeat_rows(v, k) for v in x)
    raise TypeError(f"first_rows: cannot repeat the rows of a {type(x).__name__}")


@contextlib.contextmanager
def first_rows(module: torch.nn.Module, k: int, calls: range) -> Iterator[None]:
    """Within the block, the calls of ``module`` (counted from 0) outside ``calls`` run on the first
    row of each group of ``k`` rows of its batch only, and give every row of a group that row's
    output: the image factor's adapter or ControlNet in the steps where :func:`blended_rows` runs
    row 0 alone."""
    plain, done = module.forward, [0]

    def forward(sample, *args, **kwargs):
        call, done[0] = done[0], done[0] + 1
        if call in calls:
            return plain(sample, *args, **kwargs)
        return _repeat_rows(_first_row_call(plain, k, sample, args, kwargs), k)

    module.forward = forward
    try:
        yield
    finally:
        del module.forward  # the module's own forward again


@contextlib.contextmanager
def blended_rows(unet: torch.nn.Module, masks: torch.Tensor, calls: range | None = None) -> Iterator[None]:
    """Within the block, every group of k consecutive rows of ``unet``'s batch (one group per block of
    classifier-free guidance) gets one prediction: the group's k predictions blended with ``masks``
    ((k, H, W) over the latent's cells, summing to 1), so rows that start from the same noise share
    one trajectory. ``calls``: blend only these calls of ``unet``, counted from 0 (a sampler calls it
    once a step); in the others only each group's first row runs, and its prediction is every row's
    (the rows share the latent, so there the trajectory is the first row's alone)."""
    plain, k, done = unet.forward, masks.shape[0], [0]
    if calls is not None and (not isinstance(calls, range) or calls.step != 1 or calls.start < 0):
        raise ValueError(f"blended_rows: calls must be a range(start, stop) with start >= 0, or None, got {calls!r}")

    def forward(sample, *args, **kwargs):
        rows, call, done[0] = sample.shape[0], done[0], done[0] + 1
        if rows % k or masks.shape[1:] != sample.shape[-2:]:
            raise ValueError(f"blended_rows: a batch of {rows} rows of {tuple(sample.shape[-2:])} latents for "
                             f"masks of shape {tuple(masks.shape)}")  # fmt: skip
        if calls is not None and call not in calls:  # the first row of each group alone
            out = _first_row_call(plain, k, sample, args, kwargs)
            pred = out.sample if hasattr(out, "sample") else out[0]
            mixed = pred.repeat_interleave(k, 0)
        else:
            out = plain(sample, *args, **kwargs)
            pred = out.sample if hasattr(out, "sample") else out[0]
            groups = pred.unflatten(0, (-1, k))  # (blocks, k, C, H, W)
            mixed = (groups * masks.to(pred)[None, :, None]).sum(1, keepdim=True).expand_as(groups).flatten(0, 1)
        return type(out)(sample=mixed) if hasattr(out, "sample") else (mixed,)

    unet.forward = forward
    try:
        yield
    finally:
        del unet.forward  # the module's own forward again


def template_caption(prompt: str, objects: list[str]) -> str:
    """A caption of ``prompt``'s template (its text before the first object it names, "a scene with";
    "a photo of" where there is none) naming ``objects`` (at least one): "a scene with a dog and a cat."."""
    if not objects:
        raise ValueError("template_caption: name at least one object")
    mentions = parse_prompt(prompt).mentions
    words = prompt[: mentions[0].start].split() if mentions else []
    prefix = " ".join(words[:-1] if words and words[-1] in ("a", "an") else words) or "a photo of"
    named = [("an " if category(o).singular[0] in "aeiou" else "a ") + category(o).singular for o in objects]
    return f"{prefix} {named[0] if len(named) == 1 else ', '.join(named[:-1]) + ' and ' + named[-1]}."


def object_caption(prompt: str, obj: str) -> str:
    """``prompt``'s template naming ``obj`` alone: "a scene with a dog."."""
    return template_caption(prompt, [obj])


def split_render(graph: FactorGraphPipeline, prompt: str, seg: np.ndarray, *, seed: int = 0, whole: float = 0.0,
                 objects: list[str] | None = None, size: int | None = None, steps: int | None = None,
                 guidance: float | None = None, split_steps: float | tuple[float, float] = 1.0,
                 progress: bool = False) -> FactorGraphOutput:  # fmt: skip
    """The graph's image factor on the seg map ``seg`` (class ids), one row per object (see the
    module's docstring); ``objects`` default to the prompt's. Only the image is sampled (the
    image factor's other parents are the null condition). ``split_steps``: the share of the steps,
    the first ones, drawn one object at a time (at least one step; 1: all of them), or a (start,
    end) pair of shares (``(0.5, 1)``: the second half); the other steps run row 0 alone, the whole
    prompt on the whole map, so the objects' rows cost only that share.
    Returns the batch's output: row 0 is the result (every row holds the same image); row j > 0
    was given object j's caption and map."""
    lo, hi = split_steps if isinstance(split_steps, (tuple, list)) else (0.0, split_steps)
    if not 0 <= lo < hi <= 1:
        raise ValueError("split_steps: the share of the steps drawn one object at a time must be in (0, 1], or a "
                         f"(start, end) pair with 0 <= start < end <= 1, got {split_steps!r}")  # fmt: skip
    nodes = graph.spec.factors
    if "image" not in nodes:
        raise ValueError(f"split_render: the graph has no image factor ({list(nodes)})")
    if "seg" not in nodes["image"].parents:
        raise ValueError(f"split_render: the image factor does not read seg (its parents: {list(nodes['image'].parents)})")
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise ValueError(f"split_render: seg must be an (H, W) map of class ids, got shape {seg.shape}")
    objects = list(parse_prompt(prompt).things) if objects is None else list(objects)
    side = size or nodes["image"].size or graph.native_size()
    shown, masks = object_masks(objects, seg, side // graph.base.vae_scale_factor, whole)
    rows = [prompt, *(object_caption(prompt, o) for o in shown)]
    maps = [seg, *(object_alone(seg, o) for o in shown)]
    kind = nodes["image"].kind
    target = graph.modules["image"] if kind == "scratch" else graph.base.unet  # what predicts the image's noise
    n_steps = steps or nodes["image"].steps
    first = min(round(lo * n_steps), n_steps - 1)
    calls = None if (lo, hi) == (0, 1) else range(first, max(first + 1, round(hi * n_steps)))
    cut = calls is not None and kind != "scratch"  # an adapter's or ControlNet's features, too, for row 0 alone
    with (first_rows(graph.modules["image"], len(maps), calls) if cut else contextlib.nullcontext(),
          blended_rows(target, masks, calls=calls)):  # fmt: skip
        return graph(rows, factors=["image"], given={"seg": maps}, seed=[seed] * len(rows),
                     sizes={"image": side}, steps={"image": steps} if steps else None,
                     guidance={"image": guidance} if guidance else None, progress=progress)  # fmt: skip

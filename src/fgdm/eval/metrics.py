"""Compliance metrics with the papers' definitions, on label maps (from the judge or generated).

- object recall: |prompt objects present| / |prompt objects| (FG-DM); and its chance level, the
  shuffled recall: the same images scored against the objects of prompts they were not made for;
- MultiGen MG-k: % of images with at least k of the prompt's objects present, mean ± std over
  rounds (TokenCompose);
- VISOR object accuracy: both objects of a relation prompt present; relation accuracy given both
  are present, from the centroids of their regions;
- presence by position: how often the prompt's first, second, ... named object is present (the
  order bias of text-to-image models, which tend to draw the first-named object and drop a later one);
- paired comparison of two methods on the same items (prompts and seeds): the sign test;
- depth agreement of depth maps with reference ones: mean absolute error and per-map correlation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..compliance.recall import PRESENCE_MIN_AREA, object_recall, present_categories
from ..world.categories import category

__all__ = ["PRESENCE_MIN_AREA", "centroid", "multigen_scores", "object_recall", "ordinal",
           "presence_by_position", "present_categories", "recall_summary", "relation_holds", "shuffled_recall", "sign_test",
           "visor_scores"]  # fmt: skip


def recall_summary(recalls: Sequence[float]) -> dict:
    r = np.asarray(recalls, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no recalls to summarise")
    return {"mean_recall": round(float(r.mean()), 4), "all_present_rate": round(float((r == 1.0).mean()), 4),
            "n": int(r.size)}  # fmt: skip


def sign_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """``b`` against ``a`` on the same items: how many items ``b`` scores higher and lower (ties
    left out), and the two-sided exact sign-test p of that split under "no difference"."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    better = sum(y > x for x, y in zip(a, b, strict=True))
    worse = sum(y < x for x, y in zip(a, b, strict=True))
    n, k = better + worse, min(better, worse)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"better": int(better), "worse": int(worse), "p": p}


def map_agreement(pred: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> dict:
    """One-channel maps in [0, 1] ((H, W) each: depth as normalised inverse depth, or sketch edges)
    against reference maps of the same size: the mean absolute error (``mae``) and the mean per-map
    Pearson correlation (``corr``: the layout, whatever the scale; maps that are flat on either side
    have none and are left out, ``None`` if all are)."""
    _check_pairs("map_agreement", pred, real)
    mae = float(np.mean([np.abs(np.asarray(p, np.float64) - r).mean() for p, r in zip(pred, real, strict=True)]))
    corr = [np.corrcoef(np.ravel(p), np.ravel(r))[0, 1] for p, r in zip(pred, real, strict=True)
            if np.std(p) and np.std(r)]  # fmt: skip
    return {"mae": round(mae, 4), "corr": round(float(np.mean(corr)), 4) if corr else None}


def normal_agreement(pred: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> dict:
    """Normal maps (unit vectors, (H, W, 3) each) against reference maps of the same size, as normal
    estimation is scored: the mean angle between the two per pixel, in degrees (``deg``), and the
    share of pixels within 11.25 degrees (``within_11``), both averaged over maps."""
    _check_pairs("normal_agreement", pred, real)
    deg, close = [], []
    for p, r in zip(pred, real, strict=True):
        cos = np.clip((np.asarray(p, np.float64) * np.asarray(r, np.float64)).sum(-1), -1.0, 1.0)
        a = np.degrees(np.arccos(cos))
        deg.append(a.mean())
        close.append((a < 11.25).mean())
    return {"deg": round(float(np.mean(deg)), 3), "within_11": round(float(np.mean(close)), 4)}


def _check_pairs(name: str, pred: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> None:
    if len(pred) != len(real) or not len(pred):
        raise ValueError(f"{name}: give as many maps as references, at least one; got {len(pred)} and {len(real)}")
    bad = [i for i, (p, r) in enumerate(zip(pred, real, strict=True)) if np.shape(p) != np.shape(r)]
    if bad:
        raise ValueError(f"{name}: map {bad[0]} is {np.shape(pred[bad[0]])}, its reference {np.shape(real[bad[0]])}")


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def presence_by_position(objects: Sequence[Sequence[str]], present: Sequence[Sequence[str]]) -> list[float]:
    """Percentage of images in which the prompt's i-th named object (prompt order) is present, for
    i = 1, 2, ...: entry i is taken over the images whose prompt names at least i objects.

    ``objects[i]`` are image i's prompt objects in prompt order, ``present[i]`` what the judge found.
    """
    if len(objects) != len(present):
        raise ValueError(f"objects and present must be equally long, got {len(objects)} and {len(present)}")
    longest = max((len(o) for o in objects), default=0)
    if longest == 0:
        raise ValueError("no prompt objects to score")
    found = [set(p) for p in present]
    return [round(100 * float(np.mean([o[i] in f for o, f in zip(objects, found, strict=True) if len(o) > i])), 2)
            for i in range(longest)]  # fmt: skip


def shuffled_recall(objects: Sequence[Sequence[str]], present: Sequence[Sequence[str]]) -> float | None:
    """The recall the same images score against prompts they were not made for: the chance level of
    :func:`object_recall` for this generator and judge.

    ``objects[i]`` are image i's prompt objects, ``present[i]`` what the judge found in it. For each
    category c, ``rate[c]`` is the share of images whose prompt does not name c in which c is found
    anyway (the generator drawing it unasked, or the judge seeing it where it is not). The result
    averages ``rate`` over each image's prompt objects and then over images, as the mean recall
    does: a generator that ignored its prompts would score about this, so the gap between the mean
    recall and this number is what the prompt buys. None when some prompted category is named by
    every prompt (no image to measure its rate on).
    """
    if len(objects) != len(present):
        raise ValueError(f"objects and present must be equally long, got {len(objects)} and {len(present)}")
    named = [set(o) for o in objects]
    found = [set(p) for p in present]
    rate = {}
    for c in set().union(*named):
        others = [f for n, f in zip(named, found, strict=True) if c not in n]
        if not others:
            return None
        rate[c] = sum(c in f for f in others) / len(others)
    per_image = [float(np.mean([rate[c] for c in o])) for o in objects if o]
    if not per_image:
        raise ValueError("no prompt objects to score")
    return round(float(np.mean(per_image)), 4)


def multigen_scores(counts: np.ndarray, ks: Sequence[int] = (2, 3, 4, 5)) -> dict:
    """MG-k from ``counts[r, p]`` = number of prompt p's objects present in round r's image.

    Returns {"MG2": {"mean": %, "std": %}, ...}: the percentage of images with >= k objects in
    each round, then mean and (population) standard deviation over rounds.
    """
    c = np.asarray(counts)
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"counts must be a non-empty (rounds, prompts) array, got shape {c.shape}")
    out = {}
    for k in ks:
        per_round = (c >= k).mean(axis=1) * 100
        out[f"MG{k}"] = {"mean": round(float(per_round.mean()), 2), "std": round(float(per_round.std()), 2)}
    return out


def centroid(seg: np.ndarray, name: str) -> tuple[float, float] | None:
    """(x, y) centroid of a category's pixels, or None if absent."""
    ys, xs = np.nonzero(seg == category(name).id)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def relation_holds(seg: np.ndarray, a: str, b: str, relation: str) -> bool | None:
    """Whether ``a REL b`` holds between the regions' centroids (None if either is absent)."""
    ca, cb = centroid(seg, a), centroid(seg, b)
    if ca is None or cb is None:
        return None
    dx, dy = ca[0] - cb[0], ca[1] - cb[1]
    checks = {"left": dx < 0, "right": dx > 0, "above": dy < 0, "below": dy > 0}
    if relation not in checks:
        raise ValueError(f"unknown relation {relation!r}; expected one of {sorted(checks)}")
    return bool(checks[relation])


def visor_scores(rows: Sequence[tuple[bool, bool | None]]) -> dict:
    """From (both objects present, relation holds or None) per image: object accuracy (%) and
    relation accuracy given both are present (%)."""
    if not rows:
        raise ValueError("no rows to score")
    both = [b for b, _ in rows]
    rel = [r for b, r in rows if b and r is not None]
    return {"object_accuracy": round(100 * float(np.mean(both)), 2),
            "relation_accuracy_given_objects": round(100 * float(np.mean(rel)), 2) if rel else None,
            "n": len(rows)}  # fmt: skip

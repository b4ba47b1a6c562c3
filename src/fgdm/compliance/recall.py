"""Object presence and recall from label maps (the judge's, or synthesized condition maps)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..world.categories import VOID_ID, category
from ..world.conditions import class_areas, largest_component_areas
from ..world.vocab import parse_prompt

PRESENCE_MIN_AREA = 0.003  # a category is present if it covers >= 0.3% of the image
PRESENCE_RULES = ("area", "component")
# what a label map shows over an object's region (:func:`region_verdict`)
VERDICTS = ("its own class", "another of the prompt's objects", "a thing the prompt does not name", "stuff or none")


def presence_areas(seg: np.ndarray, min_area: float = PRESENCE_MIN_AREA, rule: str = "area") -> dict[int, float]:
    """Class id -> area fraction of every class (void excluded) present under ``rule``: its total
    area (``"area"``, the judge's rule for images) or its largest 4-connected region
    (``"component"``: scattered specks of a class do not add up), if at least ``min_area``."""
    if rule not in PRESENCE_RULES:
        raise ValueError(f"rule must be one of {PRESENCE_RULES}, got {rule!r}")
    return class_areas(seg, min_area) if rule == "area" else largest_component_areas(seg, min_area)


def present_categories(seg: np.ndarray, min_area: float = PRESENCE_MIN_AREA, rule: str = "area") -> set[str]:
    """Thing categories present in a label map under ``rule`` (see :func:`presence_areas`)."""
    return {category(i).name for i in presence_areas(seg, min_area, rule) if category(i).is_thing}


def object_recall(objects: Sequence[str], present: Iterable[str]) -> float:
    """Fraction of the prompt's (distinct) objects that are present (FG-DM's object recall)."""
    want = set(objects)
    if not want:
        raise ValueError("object recall needs a prompt that names at least one known object")
    return len(want & set(present)) / len(want)


def prompt_objects(prompt: str, search: str) -> tuple[list[str], list[str]]:
    """The prompt's objects (vocabulary things, the ones recall counts) and its unknown words; a
    prompt that names none is an error naming the ``search`` that needs them."""
    parsed = parse_prompt(prompt)
    if not parsed.things:
        unknown = f" (words not in the vocabulary: {list(parsed.unknown)})" if parsed.unknown else ""
        raise ValueError(f"prompt {prompt!r} names no known objects{unknown}; {search} needs at least one")
    return list(parsed.things), list(parsed.unknown)


def region_verdict(labels: np.ndarray, obj: str, objects: Sequence[str]) -> str:
    """What ``labels`` (class ids, e.g. the judge's map of an image, over an object's region of the
    real map) mostly are, one of :data:`VERDICTS`: the object ``obj``'s own class, another of the
    prompt's ``objects``, a thing the prompt does not name, or stuff (or no class, or an empty region)."""
    if labels.size == 0:
        return VERDICTS[3]
    vals, counts = np.unique(labels, return_counts=True)
    if int(vals[np.argmax(counts)]) == VOID_ID:  # no class (a judge's map has none; a world map may)
        return VERDICTS[3]
    top = category(int(vals[np.argmax(counts)]))
    if top.name == obj:
        return VERDICTS[0]
    if not top.is_thing:
        return VERDICTS[3]
    return VERDICTS[1] if top.name in objects else VERDICTS[2]

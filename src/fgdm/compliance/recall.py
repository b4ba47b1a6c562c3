"""Object presence and recall from label maps (the judge's, or synthesized condition maps)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..world.categories import category
from ..world.conditions import class_areas

PRESENCE_MIN_AREA = 0.003  # a category is present if it covers >= 0.3% of the image


def present_categories(seg: np.ndarray, min_area: float = PRESENCE_MIN_AREA) -> set[str]:
    """Thing categories covering at least ``min_area`` of a label map."""
    return {category(i).name for i, a in class_areas(seg, min_area).items() if category(i).is_thing}


def object_recall(objects: Sequence[str], present: Iterable[str]) -> float:
    """Fraction of the prompt's (distinct) objects that are present (FG-DM's object recall)."""
    want = set(objects)
    if not want:
        raise ValueError("object recall needs a prompt that names at least one known object")
    return len(want & set(present)) / len(want)

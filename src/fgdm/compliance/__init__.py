"""Prompt compliance: which of a prompt's objects are present, object recall (and, later, SBPC)."""

from .recall import PRESENCE_MIN_AREA, object_recall, present_categories

__all__ = ["PRESENCE_MIN_AREA", "object_recall", "present_categories"]

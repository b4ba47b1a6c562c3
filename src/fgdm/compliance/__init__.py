"""Prompt compliance: which of a prompt's objects are present, object recall, and SBPC search
(``fgdm.compliance.sbpc``, imported from there: it pulls in the FG-DM pipeline)."""

from .recall import PRESENCE_MIN_AREA, object_recall, present_categories

__all__ = ["PRESENCE_MIN_AREA", "object_recall", "present_categories"]

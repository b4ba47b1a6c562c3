"""Object-level editing of condition maps (and, later, inversion-based editing of real images)."""

from .maps import (
    OPS,
    EditLog,
    MapSample,
    apply_edits,
    change_class,
    delete,
    duplicate,
    flip,
    move,
    paste,
    paste_source,
    resize,
    resolve,
    sample_conditions,
    sample_from_export,
    sample_from_run,
    scribble_text,
    thing_instances,
)

__all__ = ["OPS", "EditLog", "MapSample", "apply_edits", "change_class", "delete", "duplicate", "flip", "move",
           "paste", "paste_source", "resize", "resolve", "sample_conditions", "sample_from_export", "sample_from_run",
           "scribble_text", "thing_instances"]  # fmt: skip

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
    resize,
    resolve,
    scribble_text,
    thing_instances,
)

__all__ = ["OPS", "EditLog", "MapSample", "apply_edits", "change_class", "delete", "duplicate", "flip", "move",
           "paste", "resize", "resolve", "scribble_text", "thing_instances"]  # fmt: skip

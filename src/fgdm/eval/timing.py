"""Timing helpers: wall-clock rates measured side by side in one run."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(fn: Callable[[int], object], n: int, warmup: int = 2) -> float:
    """Calls per second of ``fn(i)`` over ``i = 0..n-1`` (after ``warmup`` untimed calls)."""
    for i in range(warmup):
        fn(i)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)

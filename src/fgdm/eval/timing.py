"""Timing helpers: wall-clock rates measured side by side in one run."""

from __future__ import annotations

import time
from collections.abc import Callable


def sync() -> None:
    """Wait for queued GPU work, so that wall-clock timings include it (no-op on CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rate(fn: Callable[[int], object], n: int, warmup: int = 2) -> float:
    """Calls per second of ``fn(i)`` over ``i = 0..n-1`` (after ``warmup`` untimed calls)."""
    for i in range(warmup):
        fn(i)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)

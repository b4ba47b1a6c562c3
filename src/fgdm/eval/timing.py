"""Timing helpers: wall-clock rates measured side by side in one run, and operation counts."""

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


def count_flops(fn: Callable[[], object]) -> float:
    """Floating-point operations of ``fn()``: convolutions, matrix products and attention, counted
    from their shapes by torch's ``FlopCounterMode`` (so the same on any device), with the CPU
    attention kernel that torch's table lacks counted like the GPU ones. Elementwise work (norms,
    activations) is not counted. Wall-clock time depends on whether a device is compute-bound; this
    does not, which is what compares methods whose batches differ (e.g. SBPC's N candidates)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = cpu_attention
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return float(counter.get_total_flops())

"""``fgdm bench world``: how fast SceneWorld feeds a training loop."""

from __future__ import annotations

import os
import platform
import time

import torch

from ..world.dataset import SceneWorldDataset, collate, make_sample
from ..world.render import render
from ..world.scene import sample_scene
from .timing import rate


def bench_world(size: int = 128, n: int = 200, workers: int | None = None, batch_size: int = 32) -> dict:
    """Samples/s of (a) scene sampling + rendering, (b) full samples with captions, (c) dataset items
    as tensors, all on one core, and (d) a DataLoader with ``workers`` processes; plus ratios."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _bench(size, n, workers, batch_size)
    finally:
        torch.set_num_threads(threads)


def _bench(size: int, n: int, workers: int, batch_size: int) -> dict:
    render_rate = rate(lambda i: render(sample_scene(10_000 + i), size), n)
    sample_rate = rate(lambda i: make_sample(i, seed=1, size=size), n)
    ds = SceneWorldDataset(n * max(1, workers) + batch_size * 4, size=size, seed=2)
    item_rate = rate(lambda i: ds[i], n)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    it = iter(loader)
    next(it)  # start-up (worker spawn) is not timed
    count, t0 = 0, time.perf_counter()
    for batch in it:
        count += batch["image"].shape[0]
    loader_rate = count / (time.perf_counter() - t0)
    return {
        "size": size,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "render_per_s_1core": round(render_rate, 1),
        "sample_per_s_1core": round(sample_rate, 1),
        "dataset_item_per_s_1core": round(item_rate, 1),
        "dataloader_workers": workers,
        "dataloader_per_s": round(loader_rate, 1),
        "dataloader_vs_1core_ratio": round(loader_rate / item_rate, 2),
    }

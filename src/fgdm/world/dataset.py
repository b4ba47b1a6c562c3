"""SceneWorld samples and the torch dataset that renders them on the fly.

A sample is a pure function of ``(seed, index, size, config)``: the same item comes out in any
DataLoader worker, on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .captions import Caption, make_caption
from .categories import category
from .render import Render, check_size, render
from .scene import WorldConfig, sample_scene

CONDITIONS = ("seg", "depth", "normal", "sketch")


def scene_seed(seed: int, index: int) -> int:
    """The scene seed of item ``index`` of the dataset with base ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class Sample:
    index: int
    seed: int  # the scene seed
    render: Render
    caption: Caption

    def record(self) -> dict:
        """JSON-serialisable description: caption, grounding, objects (with boxes), scene."""
        r = self.render
        boxes, vis = r.boxes(), r.visible_fraction()
        objects = []
        for o in r.scene.objects:
            objects.append(
                {
                    "instance_id": o.instance_id,
                    "category": o.category,
                    "category_id": o.category_id,
                    "bbox": list(boxes[o.instance_id]) if o.instance_id in boxes else None,
                    "visible_fraction": round(vis[o.instance_id], 4),
                    "depth": round(o.depth, 4),
                }
            )
        return {
            "index": self.index,
            "seed": self.seed,
            "size": r.size,
            "caption": self.caption.text,
            "grounding": [p.to_dict() for p in self.caption.grounding],
            "objects": objects,
            "kind": r.scene.kind,
            "style": r.scene.style,
            "stuff": sorted({b.stuff for b in r.scene.bands}, key=lambda s: category(s).id),
        }


def make_sample(index: int, *, seed: int = 0, size: int = 128, config: WorldConfig | None = None) -> Sample:
    """Render item ``index`` of the world with base ``seed``."""
    cfg = config or WorldConfig()
    s = scene_seed(seed, index)
    scene = sample_scene(s, cfg)
    r = render(scene, size)
    cap = make_caption(scene, np.random.default_rng(np.random.SeedSequence([s, 0xCA7])), cfg, r.visible_fraction())
    return Sample(index, s, r, cap)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1] (the diffusers convention)."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(127.5).sub(1.0)


class SceneWorldDataset(torch.utils.data.Dataset):
    """Renders SceneWorld samples on the fly, deterministically given ``(seed, index)``.

    Each item is a dict:
        ``image`` (3, H, W) float in [-1, 1]; ``cond_<name>`` (3, H, W) float in [-1, 1] for each
        requested condition (the encoded 3-channel maps); ``seg`` and ``instance`` (H, W) int64;
        ``caption`` str; ``grounding`` list of phrase dicts (span, category, instance ids);
        ``grounding_masks`` (P, H, W) bool, one per phrase; ``index`` and ``seed`` ints.

    Use :func:`collate` as the DataLoader's ``collate_fn`` (captions and grounding vary in length).
    """

    def __init__(
        self,
        length: int,
        *,
        size: int = 128,
        seed: int = 0,
        config: WorldConfig | None = None,
        conditions: tuple[str, ...] = CONDITIONS,
    ) -> None:
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        bad = [c for c in conditions if c not in CONDITIONS]
        if bad:
            raise ValueError(f"unknown conditions {bad}; choose from {list(CONDITIONS)}")
        self.length, self.size, self.seed = length, check_size(size), seed
        self.config = config or WorldConfig()
        self.conditions = tuple(conditions)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        sample = make_sample(index, seed=self.seed, size=self.size, config=self.config)
        r = sample.render
        conds = r.conditions()
        masks = sample.caption.masks(r.seg, r.instance)
        item = {
            "image": _to_tensor(r.image),
            "seg": torch.from_numpy(r.seg.astype(np.int64)),
            "instance": torch.from_numpy(r.instance.astype(np.int64)),
            "caption": sample.caption.text,
            "grounding": [p.to_dict() for p in sample.caption.grounding],
            "grounding_masks": torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros(0, r.size, r.size, dtype=torch.bool),
            "index": index,
            "seed": sample.seed,
        }
        for name in self.conditions:
            item[f"cond_{name}"] = _to_tensor(conds[name])
        return item


def collate(batch: list[dict]) -> dict:
    """Stack tensors of equal shape; keep captions, grounding and grounding masks as lists."""
    out: dict = {}
    for key in batch[0]:
        vals = [b[key] for b in batch]
        if key in ("grounding_masks", "grounding", "caption"):
            out[key] = vals
        elif isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        else:
            out[key] = torch.tensor(vals)
    return out

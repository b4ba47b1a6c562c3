"""Image-space best-of-N: N full-size images from the base model, each segmented by the judge, the
one holding most of the prompt's objects kept.

This is the paper's "SD N=10" baseline for SBPC, here a method of its own: on a CPU it finds more
objects than FG-DM's SBPC in the same time (docs/results.md, "Recall at equal time").

Choice rule (documented, deterministic): the highest object recall; ties go to the earliest image
(the lowest seed). Image i uses seed ``seed + i``, so ``fgdm generate PROMPT --seed S+i`` redraws it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from PIL import Image

from ..models.judge import Judge
from ..pipelines.text2image import Text2ImagePipeline
from .recall import object_recall, present_categories, prompt_objects


@dataclass
class ImageCandidate:
    index: int
    seed: int
    recall: float
    present: list[str]  # prompt objects the judge found in the image
    missing: list[str]

    def to_dict(self) -> dict:
        return {"index": self.index, "seed": self.seed, "recall": round(self.recall, 4), "present": self.present,
                "missing": self.missing}  # fmt: skip


@dataclass
class BestOfResult:
    prompt: str
    objects: list[str]  # the prompt's known objects (recall is computed against these)
    unknown: list[str]  # words the vocabulary did not know (reported, not scored)
    candidates: list[ImageCandidate]
    chosen: int  # index into candidates
    images: list[Image.Image]  # every candidate's image, in candidate order
    timings: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False

    @property
    def image(self) -> Image.Image:
        return self.images[self.chosen]


def best_of_images(pipe: Text2ImagePipeline, judge: Judge, prompt: str, *, n: int = 10, seed: int = 0,
                   steps: int = 25, guidance: float = 7.5, size: int | None = None, negative_prompt: str = "",
                   batch_size: int | None = None, early_stop: float | None = None,
                   progress: bool = False) -> BestOfResult:  # fmt: skip
    """Best of ``n`` base-model images by the judge's object recall (see the module's choice rule).

    Images are drawn ``batch_size`` at a time (default: all ``n`` in one batch; with ``early_stop``
    a fifth of them), and with ``early_stop`` drawing stops once an image reaches that recall.
    """
    # 1. check inputs
    objects, unknown = prompt_objects(prompt, "best-of-N")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (--best-of) must be a positive integer, got {n!r}")
    if early_stop is not None and not 0 < early_stop <= 1:
        raise ValueError(f"early_stop must be in (0, 1], got {early_stop!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch = batch_size or (n if early_stop is None else max(1, math.ceil(n / 5)))
    # 2. draw images in batches; the judge segments each batch; score each image by object recall
    cands: list[ImageCandidate] = []
    images: list[Image.Image] = []
    timings = {"images_s": 0.0, "judge_s": 0.0}
    stopped = False
    while len(cands) < n:
        seeds = list(range(seed + len(cands), seed + min(n, len(cands) + batch)))
        t0 = time.perf_counter()
        out = pipe(prompt, num_images_per_prompt=len(seeds), num_inference_steps=steps, guidance_scale=guidance,
                   size=size, seed=seeds, negative_prompt=negative_prompt, progress=progress)  # fmt: skip
        t1 = time.perf_counter()
        segs = judge.segment_images(out.images)
        timings["images_s"] += t1 - t0
        timings["judge_s"] += time.perf_counter() - t1
        for s, img, seg in zip(seeds, out.images, segs, strict=True):
            found = present_categories(seg)
            present = [o for o in objects if o in found]
            cands.append(ImageCandidate(len(cands), s, object_recall(objects, found), present,
                                        [o for o in objects if o not in found]))  # fmt: skip
            images.append(img)
        if early_stop is not None and max(c.recall for c in cands) >= early_stop and len(cands) < n:
            stopped = True
            break
    # 3. keep the best: the highest recall, then the earliest
    chosen = max(range(len(cands)), key=lambda i: (cands[i].recall, -i))
    timings["total_s"] = timings["images_s"] + timings["judge_s"]
    return BestOfResult(prompt, objects, unknown, cands, chosen, images, timings, stopped)

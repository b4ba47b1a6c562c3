"""Benchmark runners: generate images for a prompt set, judge them, score them.

Work is split across processes with ``accelerate`` (``accelerate launch -m fgdm.cli eval ...``
uses every GPU), shows progress, and resumes: an image whose result file exists is not
generated again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from ..models.judge import Judge
from ..pipelines.text2image import Text2ImagePipeline
from .metrics import present_categories, relation_holds
from .prompts import PromptEntry


def run_prompts(entries: list[PromptEntry], out: Path, *, pipe: Text2ImagePipeline, judge: Judge,
                images_per_prompt: int, steps: int, guidance_scale: float, seed: int, size: int | None,
                progress: bool = True) -> list[dict]:  # fmt: skip
    """Generate ``images_per_prompt`` images per entry (image k of prompt p uses seed
    ``seed + 1000 * p + k``), segment each with the judge, and return one result per image:
    {prompt, k, objects, present, seconds}. Results are cached in ``out/results``."""
    from accelerate import PartialState

    if not 1 <= images_per_prompt <= 1000:  # seeds are seed + 1000 p + k
        raise ValueError(f"images_per_prompt must be in 1-1000, got {images_per_prompt}")
    state = PartialState()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    mine = list(range(len(entries)))[state.process_index :: state.num_processes]
    bar = tqdm(
        total=len(mine) * images_per_prompt, desc="generate+judge", disable=not progress or not state.is_main_process
    )
    for p in mine:
        e = entries[p]
        todo = [k for k in range(images_per_prompt) if not (out / "results" / f"p{p:05d}-{k:02d}.json").exists()]
        bar.update(images_per_prompt - len(todo))
        if not todo:
            continue
        contiguous = todo == list(range(todo[0], todo[0] + len(todo)))
        groups = [todo] if contiguous else [[k] for k in todo]
        for ks in groups:
            t0 = time.perf_counter()
            res = pipe(e.text, num_images_per_prompt=len(ks), num_inference_steps=steps, guidance_scale=guidance_scale,
                       seed=seed + 1000 * p + ks[0], size=size)  # fmt: skip
            dt = (time.perf_counter() - t0) / len(ks)
            for k, img in zip(ks, res.images, strict=True):
                img.save(out / "images" / f"p{p:05d}-{k:02d}.png")
                seg = judge.segment_images([img])[0]
                present = sorted(present_categories(seg))
                row = {"prompt_index": p, "k": k, "prompt": e.text, "objects": list(e.objects), "present": present,
                       "relation": e.relation, "seed": seed + 1000 * p + k, "seconds": round(dt, 4)}  # fmt: skip
                if e.relation is not None and len(e.objects) == 2:
                    row["relation_holds"] = relation_holds(seg, e.objects[0], e.objects[1], e.relation)
                tmp = out / "results" / f".p{p:05d}-{k:02d}.json.partial"
                tmp.write_text(json.dumps(row))
                tmp.rename(out / "results" / f"p{p:05d}-{k:02d}.json")  # a result file is whole or absent
                bar.update()
    bar.close()
    state.wait_for_everyone()
    rows = []
    for p in range(len(entries)):
        for k in range(images_per_prompt):
            rows.append(json.loads((out / "results" / f"p{p:05d}-{k:02d}.json").read_text()))
    return rows

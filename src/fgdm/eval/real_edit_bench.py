"""``fgdm eval real-edit``: real-image editing measured over many images.

The "real" images are held-out SceneWorld renders (never trained on). For each, the largest
visible object is turned into another thing class (seeded choice, never one already in the
scene), either

- ``--edit text``: by prompt swap on the seg factor's inverted trajectory (``--replace old:new``,
  the prompt naming the render's visible objects), or
- ``--edit map``: by relabelling that object in the judge's extracted map (object level),

or removed:

- ``--edit remove``: by text (``--remove old``: the seg factor regenerates the class's region
  from the prompt without it; a render whose prompt names nothing else is skipped), or
- ``--edit delete``: by deleting the largest object of the judge's extracted map (filled with the
  surrounding background, object level),

and re-rendered at pixel level (the image factor inverted with the real image) or from fresh
noise (``--level semantic``). By default both the map edit and the re-render regenerate only the
edited region, the rest following the inverted path (``--no-mask``: the whole map and image, as
before the region lock; :mod:`fgdm.editing.real`). Per image and averaged: inversion
reconstruction PSNR (no edit), unchanged-region PSNR, the judge's recall of the new class over the edited region, the
share of the pixels the edit took the old class out of where the judge no longer sees it (``removal_rate``) and where
it sees background (``background_rate``), whether the edit changed the map at all, and seconds per edit. Per-image results are cached, so a run resumes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..editing.maps import MapSample, change_class, delete
from ..editing.real import edit_metrics, edit_real_image
from ..models.judge import Judge
from ..pipelines.factor_graph import FactorGraphPipeline
from ..world.categories import THINGS, category
from ..world.conditions import encode_segmentation, resize_image
from ..world.dataset import make_sample
from ..world.sheet import contact_sheet
from .prompts import with_article

MIN_VISIBLE = 0.5  # an object must be at least this visible to be named and edited


def plan_edit(index: int, *, seed: int, size: int) -> dict | None:
    """What to do with held-out render ``index``: its prompt, the object to change (the largest
    visible one) and the new class; None when the render has no visible object."""
    s = make_sample(index, seed=seed, size=size)
    r = s.render
    vis = r.visible_fraction()
    areas = {o.instance_id: int((r.instance == o.instance_id).sum()) for o in r.scene.objects}
    objs = [o for o in r.scene.objects if vis.get(o.instance_id, 0) >= MIN_VISIBLE and areas[o.instance_id] > 0]
    if not objs:
        return None
    target = max(objs, key=lambda o: (areas[o.instance_id], -o.instance_id))
    names = list(dict.fromkeys(o.category for o in objs))
    present = {o.category for o in r.scene.objects}
    rng = np.random.default_rng([seed, index, 0xED17])
    choices = [c.name for c in THINGS if c.name not in present]
    new = choices[int(rng.integers(len(choices)))]
    listed = (", ".join(with_article(n) for n in names[:-1]) + " and " if len(names) > 1 else "") + with_article(names[-1])
    prompt = "a photo of " + listed
    return {"index": index, "prompt": prompt, "old": target.category, "new": new, "image": r.image}


EDITS = ("text", "map", "remove", "delete")


def _largest_thing(s: MapSample, found: dict | None = None) -> int:
    """The instance id of the largest object of ``s``; its class name goes to ``found["class"]``."""
    objs = s.objects()
    if not objs:
        raise ValueError("the judge found no object in this image")
    i = max(objs, key=lambda i: (objs[i][1], -i))
    if found is not None:
        found["class"] = objs[i][0]
    return i


def run_real_edit(pipe: FactorGraphPipeline, judge: Judge, out: Path, *, n: int = 50, seed: int = 50_000,
                  edit: str = "text", level: str = "pixel", masked: bool = True, steps: int | None = None,
                  guidance: float | None = None, depth: bool | None = None, negative: bool = True,
                  progress: bool = True) -> dict:  # fmt: skip
    """Edit ``n`` held-out renders (resumable in ``out``); returns {"summary", "rows"}. ``depth``:
    whether the image factor is given the judge's depth too; ``negative``: whether a text edit
    guides the seg factor away from the classes it removes or replaces
    (:func:`~fgdm.editing.real.edit_real_image`)."""
    if edit not in EDITS:
        raise ValueError(f"edit must be one of {', '.join(EDITS)}, got {edit!r}")
    if level not in ("pixel", "semantic"):
        raise ValueError(f"level must be pixel or semantic, got {level!r}")
    if "image" not in pipe.spec.factors or "seg" not in pipe.spec.factors:
        raise ValueError(f"real-image editing needs seg and image factors; the graph has {list(pipe.spec.factors)}")
    size = pipe.spec.factors["image"].size or pipe.native_size()
    render_size = min(512, max(64, size - size % 8))
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(n), desc="real-image edits", disable=not progress):
        f = out / "results" / f"{i:05d}.json"
        if f.exists():
            rows.append(json.loads(f.read_text()))
            continue
        plan = plan_edit(i, seed=seed, size=render_size)
        if plan is None:
            row = {"index": i, "skipped": "no visible object"}
        else:
            image = Image.fromarray(plan["image"])
            t0 = time.perf_counter()
            try:
                target: dict = {}  # the class of the object a map edit changes (the judge's largest)
                kw = {"pixel": level == "pixel", "masked": masked, "steps": steps, "seed": i, "guidance": guidance,
                      "depth": depth, "negative": negative}  # fmt: skip
                if edit == "text":
                    kw["replace"] = {plan["old"]: plan["new"]}
                elif edit == "remove":
                    kw["remove"] = [plan["old"]]
                elif edit == "map":
                    kw["map_edits"] = lambda s, new=plan["new"], t=target: change_class(s, _largest_thing(s, t), new)
                else:
                    kw["map_edits"] = lambda s, t=target: delete(s, _largest_thing(s, t))
                res = edit_real_image(pipe, judge, image, plan["prompt"], **kw)
            except ValueError as e:  # e.g. the judge saw no object to relabel
                row = {"index": i, "skipped": str(e)}
            else:
                seconds = time.perf_counter() - t0
                m = edit_metrics(pipe, judge, image, plan["prompt"], res, steps=steps)
                src = resize_image(plan["image"], res.source_map.shape[0])
                for name, arr in (("source", src), ("source-map", encode_segmentation(res.source_map)),
                                  ("edited-map", encode_segmentation(res.edited_map)),
                                  ("edited", np.asarray(res.image.convert("RGB")))):  # fmt: skip
                    Image.fromarray(arr).save(out / "images" / f"{i:05d}-{name}.png")
                changed = bool(m["edited_fraction"] > 0)
                old = target.get("class", plan["old"])
                new = plan["new"] if edit in ("text", "map") else None
                row = {"index": i, "prompt": plan["prompt"], "edited_prompt": res.edited_prompt, "old": old,
                       "new": new, "seconds": round(seconds, 4), **m, "map_changed": changed,
                       "render_guidance": res.render_guidance,
                       "new_class_recall": None if new is None else
                       m["edited_region_recall"].get(category(new).name, 0.0) if changed else 0.0,
                       "removal_rate": m["edited_region_removal"].get(category(old).name, 0.0) if changed else 0.0,
                       "background_rate": m["edited_region_background"].get(category(old).name, 0.0) if changed else 0.0}  # fmt: skip
        tmp = f.with_suffix(".partial")
        tmp.write_text(json.dumps(row))
        tmp.replace(f)
        rows.append(row)
    return {"summary": summarise(rows), "rows": rows}


def summarise(rows: list[dict]) -> dict:
    done = [r for r in rows if "skipped" not in r]

    def mean(key, finite=True):
        vals = [r.get(key) for r in done]  # rows of runs older than a measure lack it
        vals = [v for v in vals if v is not None and not (finite and not math.isfinite(v))]
        return round(float(np.mean(vals)), 4) if vals else None

    return {"images": len(rows), "edited": len(done), "skipped": len(rows) - len(done),
            "reconstruction_psnr": mean("reconstruction_psnr"), "unchanged_psnr": mean("unchanged_psnr"),
            "map_changed_rate": mean("map_changed"), "new_class_recall": mean("new_class_recall"),
            "removal_rate": mean("removal_rate"), "background_rate": mean("background_rate"),
            "edited_fraction": mean("edited_fraction"), "seconds_per_edit": mean("seconds")}  # fmt: skip


def examples_sheet(out: Path, rows: list[dict], k: int = 6) -> Image.Image | None:
    """source | extracted map | edited map | edited image, for the first ``k`` edited images."""
    done = [r for r in rows if "skipped" not in r][:k]
    if not done:
        return None
    grid = [[np.asarray(Image.open(out / "images" / f"{r['index']:05d}-{n}.png").convert("RGB"))
             for n in ("source", "source-map", "edited-map", "edited")] for r in done]  # fmt: skip
    caps = [(f"{r['prompt']} -> {r['old']}:{r['new']}  (new-class recall {r['new_class_recall']:.2f}, "
             if r.get("new") else f"{r['prompt']} -> without the {r['old']}  (removed from "
             f"{r.get('removal_rate', 0.0):.0%} of its pixels, ") + f"unchanged PSNR {r['unchanged_psnr']:.1f} dB)"
            for r in done]  # fmt: skip
    return contact_sheet(grid, headers=["real image", "extracted map", "edited map", "edited image"], captions=caps)

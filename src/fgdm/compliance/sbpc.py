"""Sampling-based prompt compliance (SBPC) with an FG-DM graph.

Draw N segmentation maps cheaply (a small size, few steps, one batch), decode each to classes,
score each by object recall against the prompt's objects, keep the best, and run the rest of the
graph (the image factor, and any other factors) once, at full size, on the chosen map.

Choice rule (documented, deterministic): the highest recall; ties go to the candidate whose
prompt objects cover the largest total area (objects that are clearly there, not specks); then to
the earliest candidate.

Map completion (``complete=True``, off by default; not in the paper): before the final pass, each
prompt object still missing from the chosen map takes the place of an object the prompt does not
name, the largest such object first (:func:`complete_map`): an object-level class change, as
``fgdm edit`` makes, chosen automatically. The map keeps its layout; the image factor then draws the
prompt's objects where the seg factor drew other ones. The record lists every change.

Object-split rendering (``split=W``, off by default; not in the paper): the final image is drawn
by :func:`~fgdm.pipelines.split.split_render` — one image-factor row per prompt object the chosen
map shows, that object alone in its map and caption, blended per latent cell by the map's regions
into one trajectory (the whole prompt keeping weight W inside the objects' regions). Given a map of
many objects the image factor knows where things are but not well which is which; alone in its map
it draws each object as itself (docs/results.md, "Drawing the map one object at a time"). It costs
one image-factor pass per row, and samples only the image (the image factor's other parents null);
``split_steps=F`` splits only the first share F of the steps, for a share of that cost ("Which steps
bind the objects").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..pipelines.factor_graph import FactorGraphPipeline
from ..pipelines.split import split_render
from ..world.categories import category
from ..world.conditions import thing_instances
from .recall import PRESENCE_MIN_AREA, object_recall, presence_areas, prompt_objects


@dataclass
class Candidate:
    index: int
    seed: int
    recall: float
    present: list[str]  # prompt objects found in the map
    missing: list[str]
    area: float  # total area fraction of the prompt objects present
    palette_fit: float | None = None  # share of the sampled map's pixels decoded without guessing

    def to_dict(self) -> dict:
        fit = None if self.palette_fit is None else round(self.palette_fit, 4)
        return {"index": self.index, "seed": self.seed, "recall": round(self.recall, 4), "present": self.present,
                "missing": self.missing, "area": round(self.area, 4), "palette_fit": fit}  # fmt: skip


@dataclass
class SBPCResult:
    prompt: str
    objects: list[str]  # the prompt's known objects (recall is computed against these)
    unknown: list[str]  # words the vocabulary did not know (reported, not scored)
    candidates: list[Candidate]
    chosen: int  # index into candidates
    image: Image.Image | None
    maps: dict[str, np.ndarray]  # the final sample's condition maps (seg: the chosen map, full size)
    labels: np.ndarray  # the chosen map's class ids at candidate size (after completion, with complete=True)
    candidate_maps: list[np.ndarray] = field(default_factory=list)  # palette images, when kept
    timings: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    completion: list[dict] | None = None  # the class changes made by ``complete=True`` (None: not asked)
    completed_recall: float | None = None  # the chosen map's recall after them


def choose(candidates: list[Candidate]) -> int:
    """Index of the best candidate: max recall, then max area, then the earliest."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    return max(range(len(candidates)), key=lambda i: (candidates[i].recall, candidates[i].area, -i))


def score_map(labels: np.ndarray, objects: list[str], index: int, seed: int,
              min_area: float = PRESENCE_MIN_AREA, rule: str = "area") -> Candidate:  # fmt: skip
    """A candidate map's recall of ``objects`` and the area they cover, under presence ``rule``
    (see :func:`~fgdm.compliance.recall.presence_areas`; with "component" the area counted is
    each object's largest region)."""
    areas = {category(i).name: a for i, a in presence_areas(labels, min_area, rule).items() if category(i).is_thing}
    present = set(areas)
    found = [o for o in objects if o in present]
    return Candidate(index, seed, object_recall(objects, present), found, [o for o in objects if o not in present],
                     float(sum(areas[o] for o in found)))  # fmt: skip


def complete_map(labels: np.ndarray, objects: list[str], min_area: float = PRESENCE_MIN_AREA) -> tuple[np.ndarray, list[dict]]:
    """Relabel objects the prompt does not name as the prompt's missing ones.

    The missing objects (in prompt order) are those absent under SBPC's presence rule (total area
    >= ``min_area``). Donors are the connected regions of thing classes not in ``objects`` whose
    own area is at least ``min_area``, so each relabelled object counts as present; the largest
    donor goes to the first missing object, and so on. Objects left over keep their classes;
    missing objects without a donor stay missing. Returns the new labels and one record per change
    (``{"op": "change_class", "instance", "from", "new", "area"}``; instance ids as
    :func:`~fgdm.world.conditions.thing_instances` numbers them, as ``fgdm edit`` addresses objects).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    for o in objects:
        if not category(o).is_thing:
            raise ValueError(f"objects: {o!r} is a stuff class; only things are completed")
    thresh = min_area * labels.size if min_area < 1 else min_area
    present = {category(i).name for i in presence_areas(labels, min_area) if category(i).is_thing}
    missing = [o for o in dict.fromkeys(objects) if o not in present]
    out, edits = labels.copy(), []
    if not missing:
        return out, edits
    inst = thing_instances(labels)
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    named = {category(o).id for o in objects}
    donors = []
    for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
        cls = int(labels[inst == i][0])
        if cls not in named and c >= thresh:
            donors.append((c, i, cls))
    donors.sort(key=lambda d: (-d[0], d[1]))  # largest first, then the lower instance id
    for name, (c, i, cls) in zip(missing, donors, strict=False):
        out[inst == i] = category(name).id
        edits.append({"op": "change_class", "instance": i, "from": category(cls).name, "new": name,
                      "area": round(c / labels.size, 5)})  # fmt: skip
    return out, edits


def check_search(n: int, early_stop: float | None = None, split: float | None = None, split_steps: float = 1.0) -> None:
    """:func:`sbpc`'s settings that need no graph, each a clear ``ValueError`` (also used to check
    a whole export's settings before its first search)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (--sbpc) must be a positive integer, got {n!r}")
    if early_stop is not None and not 0 < early_stop <= 1:
        raise ValueError(f"early_stop must be in (0, 1], got {early_stop!r}")
    if split is None and split_steps != 1:
        raise ValueError(f"split_steps ({split_steps!r}) is the share of the steps drawn one object at a time; pass split too")
    if split is not None:
        if not 0 < split_steps <= 1:
            raise ValueError(f"split_steps: the share of the steps drawn one object at a time must be in (0, 1], got {split_steps!r}")
        if not 0 <= split <= 1:
            raise ValueError(f"split: the whole prompt's weight inside the objects' regions must be in [0, 1], got {split!r}")


def sbpc(pipe: FactorGraphPipeline, prompt: str, *, n: int = 10, cond_steps: int = 10, cond_size: int = 64,
         seed: int = 0, batch_size: int | None = None, early_stop: float | None = None,
         factors: list[str] | None = None, image_size: int | None = None, image_steps: int | None = None,
         guidance: float | None = None, keep_candidates: bool = False, mode: str = "joint",
         complete: bool = False, split: float | None = None, split_steps: float = 1.0,
         progress: bool = False) -> SBPCResult:  # fmt: skip
    """Best-of-``n`` segmentation maps by object recall, then one full-size pass of ``factors``
    (default: every other factor of the graph) on the chosen map.

    Candidate i uses seed ``seed + i`` (its noise is the seg noise of ``fgdm generate --seed
    seed+i``); the final pass uses the chosen candidate's seed. With ``early_stop`` candidates are
    drawn ``batch_size`` at a time and drawing stops once the best recall reaches it. With
    ``complete`` the chosen map's missing objects replace objects the prompt does not name
    (:func:`complete_map`) before the final pass; the candidates are chosen as without it. With
    ``split`` (the whole prompt's weight in the objects' regions, in [0, 1]) the final pass is
    :func:`~fgdm.pipelines.split.split_render` of the image alone (see the module's docstring),
    the first ``split_steps`` share of its steps split (1: all).
    """
    # 1. check inputs
    objects, unknown = prompt_objects(prompt, "SBPC")
    nodes = pipe.spec.factors
    if "seg" not in nodes:
        raise ValueError(f"SBPC needs a seg factor; this graph has {list(nodes)}")
    check_search(n, early_stop, split, split_steps)
    if split is not None:
        if "image" not in nodes or "seg" not in nodes["image"].parents:
            raise ValueError("split renders the image factor on the chosen map; this graph's image factor does not read seg")
        if factors is not None and list(factors) != ["image"]:
            raise ValueError(f"split draws the image alone on the chosen map; factors must be ['image'] (or left out), got {factors}")
        factors = ["image"]
    factors = [f for f in nodes if f != "seg"] if factors is None else list(factors)
    if "seg" in factors:
        raise ValueError("factors: seg is chosen by the search; list only the factors to run on the chosen map")
    batch = batch_size or (n if early_stop is None else max(1, math.ceil(n / 5)))
    t0 = time.perf_counter()
    # 2. draw candidates in batches, score each by object recall
    cands: list[Candidate] = []
    labels: list[np.ndarray] = []
    keep: list[np.ndarray] = []
    stopped = False
    while len(cands) < n:
        k = min(batch, n - len(cands))
        out = pipe(prompt, factors=["seg"], num_images_per_prompt=k, seed=seed + len(cands), mode=mode,
                   sizes={"seg": cond_size}, steps={"seg": cond_steps}, progress=progress)  # fmt: skip
        for j, lab in enumerate(out.labels):
            cands.append(score_map(lab, objects, len(cands), out.seeds[j]))
            cands[-1].palette_fit = out.palette_fit[j]
            labels.append(lab)
            if keep_candidates:
                keep.append(out.maps["seg"][j])
        if early_stop is not None and max(c.recall for c in cands) >= early_stop and len(cands) < n:
            stopped = True
            break
    t1 = time.perf_counter()
    # 3. keep the best (with complete: relabel other objects as its missing ones), run the remaining
    #    factors once at full size on it
    best = choose(cands)
    chosen, completion, completed_recall = labels[best], None, None
    if complete:
        chosen, completion = complete_map(chosen, objects)
        completed_recall = score_map(chosen, objects, best, cands[best].seed).recall
    image, maps = None, {}
    if split is not None:
        final = split_render(pipe, prompt, chosen, seed=cands[best].seed, whole=split, objects=objects,
                             size=image_size, steps=image_steps, guidance=guidance, split_steps=split_steps,
                             progress=progress)  # fmt: skip
        image, maps = final.images[0], {k: v[0] for k, v in final.maps.items()}
    elif factors:
        sizes = {f: image_size for f in factors if f == "image" and image_size}
        steps = {f: image_steps for f in factors if f == "image" and image_steps}
        guid = {"image": guidance} if guidance and "image" in factors else None
        final = pipe(prompt, factors=factors, given={"seg": chosen}, seed=cands[best].seed, mode=mode,
                     sizes=sizes, steps=steps, guidance=guid, progress=progress)  # fmt: skip
        image = final.images[0] if final.images else None
        maps = {k: v[0] for k, v in final.maps.items()}
    t2 = time.perf_counter()
    return SBPCResult(prompt, objects, unknown, cands, best, image, maps, chosen, keep,
                      {"candidates_s": t1 - t0, "final_s": t2 - t1, "total_s": t2 - t0}, stopped, completion,
                      completed_recall)  # fmt: skip

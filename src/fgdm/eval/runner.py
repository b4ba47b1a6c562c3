"""Benchmark runners: generate images for a prompt set, judge them, score them.

Work is split across processes with ``accelerate`` (``accelerate launch -m fgdm.cli eval ...``
uses every GPU), shows progress, and resumes: an image whose result file exists is not
generated again. :func:`verdict_sheet` draws the first prompts' images with the judge's verdicts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..models.judge import Judge
from ..pipelines.text2image import Text2ImagePipeline
from ..world.render import Render
from ..world.sheet import contact_sheet
from .metrics import PRESENCE_MIN_AREA, present_categories, relation_holds
from .prompts import PromptEntry

FOUND, MISSING, GREY = (0, 120, 0), (190, 0, 0), (110, 110, 110)  # verdict colours on the sheet
REFERENCE_TRIES = 1000  # reference renders (eval quality/fgdm) try scene seeds from here, apart from --real's


@dataclass
class RenderedImages:
    images: list[Image.Image]
    info: list[dict]  # per image: scene seed, style, objects placed, scenes tried, whether one fitted


class WorldRenders:
    """A stand-in for the pipeline in :func:`run_prompts`: for each prompt, a SceneWorld render
    that shows exactly what it names, so a benchmark scores what a perfect generator of this world
    would get from the judge — the benchmark's ceiling (``fgdm eval ... --real``).

    The scene holds the prompt's objects and nothing else (as many of each as the prompt counts),
    in the style it names ("a pencil sketch of ...", plain photo if none: `world.captions.style_of`).
    A render fits when every object covers the presence threshold in the *true* map, so does every
    background it names ("on the grass"), and a relation prompt's relation holds between the true
    regions. Scene seeds are tried in a fixed order from the image's seed: ``scene_seed(seed, j)``
    for ``first_try <= j < first_try + max_tries``. If none fits, the render with the most objects
    present is used and marked ``fits: false``. Scene kinds are drawn as in the training world.
    """

    def __init__(self, entries: list[PromptEntry], *, max_tries: int = 100, first_try: int = 0) -> None:
        self.by_text = {e.text: e for e in entries}
        self.max_tries, self.first_try = max_tries, first_try

    def __call__(self, texts: list[str], *, seed: list[int], size: int | None = None, **_ignored) -> RenderedImages:
        rendered = [self.render(text, s, size or 128) for text, s in zip(texts, seed, strict=True)]
        return RenderedImages([Image.fromarray(r.image) for r, _ in rendered], [info for _, info in rendered])

    def render(self, text: str, seed: int, size: int = 128) -> tuple[Render, dict]:
        """The render for prompt ``text`` and image seed ``seed`` (every condition map included),
        and what was done: scene seed, style, objects placed, scenes tried, whether one fitted."""
        from ..world.captions import style_of
        from ..world.categories import category
        from ..world.dataset import scene_seed
        from ..world.render import render
        from ..world.scene import WorldConfig, sample_scene
        from ..world.vocab import parse_prompt

        e = self.by_text[text]
        parsed = parse_prompt(text)
        counts = {m.category: m.count for m in parsed.mentions if m.count}
        place = [c for c in e.objects for _ in range(counts.get(c, 1))]
        stuff_ids = [category(st).id for st in parsed.stuff]
        config = WorldConfig(styles=(style_of(text),))
        best = None
        for j in range(self.max_tries):
            sc = scene_seed(seed, self.first_try + j)
            r = render(sample_scene(sc, config, objects=place), size)
            found = present_categories(r.seg)
            n_found = sum(o in found for o in e.objects)
            fits = (n_found == len(e.objects)
                    and all((r.seg == i).mean() >= PRESENCE_MIN_AREA for i in stuff_ids)
                    and (e.relation is None or len(e.objects) != 2
                         or bool(relation_holds(r.seg, e.objects[0], e.objects[1], e.relation))))  # fmt: skip
            if best is None or (fits, n_found) > best[0]:
                best = ((fits, n_found), r,
                        {"scene_seed": sc, "style": config.styles[0], "placed": place, "fits": fits})  # fmt: skip
            if fits:
                break
        return best[1], {**best[2], "tries": j + 1}


def real_reference(n: int, size: int, conditions: list[str], seed: int,
                   prompts: list[str] | list[PromptEntry] | None = None,
                   progress: bool = False) -> dict[str, list[np.ndarray]]:  # fmt: skip
    """``n`` real renders, images and each condition map, (H, W, 3) uint8: of ``prompts`` (prompt
    i mod P with seed ``seed + i``, showing what it names: :class:`WorldRenders` from scene seeds
    ``REFERENCE_TRIES`` on, apart from ``--real``'s), or without prompts, held-out renders of the
    world at large (world seed ``seed``). The reference of ``eval quality`` and ``eval fgdm``."""
    from ..world.dataset import make_sample
    from .prompts import prompt_entries

    out: dict[str, list[np.ndarray]] = {"image": [], **{c: [] for c in conditions}}
    entries = prompt_entries(prompts) if prompts else None
    renders = WorldRenders(entries, first_try=REFERENCE_TRIES) if entries else None
    for i in tqdm(range(n), desc="real renders", disable=not progress):
        if renders is None:
            r = make_sample(i, seed=seed, size=size).render
        else:
            r = renders.render(entries[i % len(entries)].text, seed + i, size)[0]
        out["image"].append(r.image)
        conds = r.conditions() if conditions else {}
        for c in conditions:
            out[c].append(conds[c])
    return out


class SavedImages:
    """A stand-in for the pipeline in :func:`run_prompts` that draws nothing: image k of prompt p is
    read from an earlier benchmark run folder (``RUN/images/pPPPPP-KK.png``), so its images can be
    judged or scored again — with another judge, MiniCLIP or reference — without generating them
    again (``fgdm eval ... --images-from RUN``). Only images of the same prompt (by text) and seed
    are taken; anything else is an error naming what differs."""

    def __init__(self, run: str | Path, entries: list[PromptEntry], *, images_per_prompt: int, seed: int) -> None:
        from .compare import run_settings

        self.run = Path(run)
        self.settings = settings = run_settings(run, "images-from")
        have_k, have_p = settings.get("images_per_prompt", 0), settings.get("n_prompts", 0)
        if settings.get("seed") != seed:
            raise ValueError(f"images-from {str(run)!r} drew its images with seed {settings.get('seed')}, not {seed}")
        if images_per_prompt > have_k or len(entries) > have_p:
            raise ValueError(f"images-from {str(run)!r} holds {have_p} prompts x {have_k} images; "
                             f"{len(entries)} x {images_per_prompt} asked")  # fmt: skip
        self.seed = seed
        self.rows = {}  # checked now, before the caller starts a run folder
        for p, e in enumerate(entries):
            for k in range(images_per_prompt):
                try:
                    saved = json.loads((self.run / "results" / f"p{p:05d}-{k:02d}.json").read_text())
                except (OSError, json.JSONDecodeError) as err:
                    raise ValueError(f"images-from {str(run)!r}: image {k} of prompt {p} is not finished there "
                                     f"({err}); resume that run first") from None  # fmt: skip
                if saved.get("prompt") != e.text or saved.get("seed") != seed + 1000 * p + k:
                    raise ValueError(f"images-from {str(run)!r}: prompt {p} there is {saved.get('prompt')!r}, "
                                     f"here {e.text!r}; use the same prompt file")  # fmt: skip
                self.rows[seed + 1000 * p + k] = saved
        with Image.open(self.run / "images" / "p00000-00.png") as im:
            self.image_size = im.size[0]  # the side of every image of the run

    def __call__(self, texts: list[str], *, seed: list[int], size: int | None = None, **_ignored) -> RenderedImages:
        images, info = [], []
        for text, s in zip(texts, seed, strict=True):
            saved = self.rows.get(s)
            if saved is None or saved["prompt"] != text:  # only what __init__ checked can be read
                raise ValueError(f"images-from {str(self.run)!r}: no image of {text!r} with seed {s} among the "
                                 "prompts and images it was opened for")  # fmt: skip
            p, k = divmod(s - self.seed, 1000)
            with Image.open(self.run / "images" / f"p{p:05d}-{k:02d}.png") as im:
                img = im.convert("RGB")
            if size is not None and img.size != (size, size):
                raise ValueError(f"images-from {str(self.run)!r} holds {img.size[0]}-px images, --size {size} asked")
            images.append(img)
            info.append({"seconds": saved.get("seconds")})  # the time it took to draw, not to read
        return RenderedImages(images, info)


def run_prompts(entries: list[PromptEntry], out: Path, *, pipe: Text2ImagePipeline | WorldRenders | SavedImages,
                judge: Judge | None, images_per_prompt: int, steps: int, guidance_scale: float, seed: int,
                size: int | None, batch_size: int = 16, progress: bool = True) -> list[dict]:  # fmt: skip
    """Generate ``images_per_prompt`` images per entry (image k of prompt p uses seed
    ``seed + 1000 * p + k``), segment each with the judge, and return one result per image:
    {prompt, k, objects, present, seconds} (without a judge, no ``present``: the images alone, e.g.
    for feature statistics). Results are cached in ``out/results``.

    Images are drawn ``batch_size`` at a time across prompts (each with its own seed, so a batch's
    makeup changes an image only by float rounding); ``seconds`` is its batch's time per image."""
    from accelerate import PartialState

    if not 1 <= images_per_prompt <= 1000:  # seeds are seed + 1000 p + k
        raise ValueError(f"images_per_prompt must be in 1-1000, got {images_per_prompt}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    state = PartialState()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    mine = list(range(len(entries)))[state.process_index :: state.num_processes]
    todo = [(p, k) for p in mine for k in range(images_per_prompt)
            if not (out / "results" / f"p{p:05d}-{k:02d}.json").exists()]  # fmt: skip
    bar = tqdm(
        total=len(mine) * images_per_prompt, initial=len(mine) * images_per_prompt - len(todo),
        desc="generate+judge", unit="image", disable=not progress or not state.is_main_process,
    )
    for b in range(0, len(todo), batch_size):
        batch = todo[b : b + batch_size]
        seeds = [seed + 1000 * p + k for p, k in batch]
        t0 = time.perf_counter()
        res = pipe([entries[p].text for p, _ in batch], num_inference_steps=steps, guidance_scale=guidance_scale,
                   seed=seeds, size=size)  # fmt: skip
        dt = (time.perf_counter() - t0) / len(batch)
        segs = judge.segment_images(res.images) if judge is not None else [None] * len(batch)
        extras = getattr(res, "info", None) or [{}] * len(batch)  # e.g. WorldRenders' scene seeds
        for (p, k), s, img, seg, extra in zip(batch, seeds, res.images, segs, extras, strict=True):
            e = entries[p]
            img.save(out / "images" / f"p{p:05d}-{k:02d}.png")
            row = {"prompt_index": p, "k": k, "prompt": e.text, "objects": list(e.objects), "relation": e.relation,
                   "seed": s, "seconds": round(dt, 4), **extra}  # fmt: skip
            if seg is not None:
                row["present"] = sorted(present_categories(seg))
            if seg is not None and e.relation is not None and len(e.objects) == 2:
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


def verdict_sheet(out: Path, rows: list[dict], *, max_prompts: int = 16, tiles_per_row: int = 8) -> Image.Image:
    """A contact sheet of a run's first ``max_prompts`` prompts: each prompt's images side by side,
    as many prompts per row as fit in ``tiles_per_row`` tiles (at least one). Under each image, its
    file's stem (``p00003-01``), the judge's verdict on each of the prompt's objects (``+ dog`` in
    green where it was found, ``- cat`` in red where it was not), on a relation prompt with both
    found whether the relation holds (``+ left`` / ``- left``), and what else it found. ``rows``
    are :func:`run_prompts`' results, images under ``out/images``."""
    by_prompt: dict[int, list[dict]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_index"], []).append(r)
    if not by_prompt:
        raise ValueError("no results to draw")
    prompts = sorted(by_prompt)[:max_prompts]
    per_row = max(1, tiles_per_row // max(len(v) for v in by_prompt.values()))
    tiles_rows, notes_rows = [], []
    for i in range(0, len(prompts), per_row):
        tiles, notes = [], []
        for p in prompts[i : i + per_row]:
            for r in sorted(by_prompt[p], key=lambda r: r["k"]):
                stem = f"p{p:05d}-{r['k']:02d}"
                tiles.append(np.asarray(Image.open(out / "images" / f"{stem}.png").convert("RGB")))
                verdicts = [(f"+ {o}", FOUND) if o in r["present"] else (f"- {o}", MISSING) for o in r["objects"]]
                if r.get("relation_holds") is not None:  # a relation prompt with both objects found
                    verdicts.append((f"+ {r['relation']}", FOUND) if r["relation_holds"] else
                                    (f"- {r['relation']}", MISSING))  # fmt: skip
                extra = sorted(set(r["present"]) - set(r["objects"]))
                notes.append([(stem, GREY), *verdicts, *([(f"also {', '.join(extra)}", GREY)] if extra else [])])
        tiles_rows.append(tiles)
        notes_rows.append(notes)
    width = max(len(t) for t in tiles_rows)  # a short last row is padded with white tiles
    blank = np.full_like(tiles_rows[0][0], 255)
    tiles_rows = [t + [blank] * (width - len(t)) for t in tiles_rows]
    return contact_sheet(tiles_rows, tile_notes=notes_rows)

"""The ``fgdm`` command line.

Bad input (arguments, files) ends with a one-line message naming the argument and value, and exit
code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

# ----------------------------------------------------------------------------- argument types


def _arg_type(fn: Callable, what: str) -> Callable:
    """Wrap a validator so argparse reports its ValueError as '--flag: message'."""

    def parse(text: str):
        try:
            return fn(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = what
    return parse


def _int_at_least(lo: int, hi: int | None = None) -> Callable:
    def f(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise ValueError(f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise ValueError(f"must be <= {hi}, got {v}")
        return v

    return _arg_type(f, f"integer >= {lo}" if hi is None else f"integer in {lo}-{hi}")


def _tta_sizes(text: str) -> list[int]:
    """``112,128,160`` -> [112, 128, 160]; ``none`` -> [] (the judge's input size alone)."""
    if text.strip().lower() == "none":
        return []
    try:
        sizes = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"expected image sides like 112,128,160 or none, got {text!r}") from None
    from .models.judge import JudgeConfig

    JudgeConfig(tta_sizes=sizes)  # the judge's own check (distinct sides >= 32)
    return sizes


def _size(text: str) -> int:
    from .world.render import check_size

    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None
    return check_size(v, "size")


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"expected a comma-separated list, got {text!r}")
    return items


def _positive_ints(text: str) -> list[int]:
    """A comma-separated list of integers >= 1 (e.g. ``--ns 1,5,10``)."""
    return [_int_at_least(1)(x) for x in _csv(text)]


def _categories(text: str) -> tuple[str, ...]:
    from .world.categories import resolve_categories

    return tuple(c.name for c in resolve_categories(_csv(text)))


def _non_negative(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not v >= 0:
        raise ValueError(f"must be >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise ValueError(f"must be > 0, got {v}")
    return v


def _eta(text: str) -> float:
    v = _non_negative(text)
    if v > 1:
        raise ValueError(f"must be in [0, 1] (DDIM's eta; 1 is DDPM's noise), got {v}")
    return v


def _unit_interval(text: str) -> float:
    v = float(text)
    if not 0 < v <= 1:
        raise ValueError(f"expected a number in (0, 1], got {text!r}")
    return v


def _weight01(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 1:
        raise ValueError(f"expected a number in [0, 1], got {text!r}")
    return v


SBPC_OPTIONS = ("keep_candidates", "early_stop", "complete", "split_objects", "split_steps")  # generate's, --sbpc only
DEFAULT_BATCH = 16  # images per call where a command draws many (the fastest on the 2-core CPU: results.md)


def _batch_size_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULT_BATCH,
                   help="images per generation batch, across prompts (default 16; speed only: each image keeps its "
                   "seed, so a resumed run may use another)")  # fmt: skip


def _runner_args(p: argparse.ArgumentParser, kind: str) -> None:
    """The options every resumable benchmark runner shares."""
    p.add_argument("--out", help=f"run folder (default: a new runs/eval-{kind}-NNN)")
    p.add_argument("--resume", action="store_true", help="continue a run in --out (same settings)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _print_result(result: dict, as_json: bool) -> None:
    """A result dict as JSON, or as a two-column markdown table (``| metric | value |``), nested
    values written out flat: ``{"mean": m, "std": s}`` as ``m ± s``, other dicts as ``key value``
    pairs, lists comma-separated."""
    if as_json:
        print(json.dumps(result, indent=1))
        return
    print("| metric | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {_cell(v)} |")


def _cell(v, depth: int = 0) -> str:
    """One value of a result as the text of a markdown table cell (see :func:`_print_result`)."""
    if isinstance(v, dict):
        if set(v) == {"mean", "std"}:
            return f"{_cell(v['mean'])} ± {_cell(v['std'])}"
        nested = any(isinstance(x, (dict, list, tuple)) for x in v.values())
        return ("; " if nested else ", ").join(f"{k}{':' if isinstance(x, dict) else ''} {_cell(x, depth + 1)}"
                                               for k, x in v.items())  # fmt: skip
    if isinstance(v, (list, tuple)):
        return (", " if depth == 0 else " ").join(_cell(x, depth + 1) for x in v)
    return str(v).replace("|", "\\|")


# ----------------------------------------------------------------------------- world commands


def _world_config(args: argparse.Namespace):
    from .world.scene import WorldConfig

    base = WorldConfig.from_yaml(args.config) if args.config else WorldConfig()
    overrides = {}
    for key in ("min_objects", "max_objects", "categories", "scene_kinds", "styles"):
        v = getattr(args, key, None)
        if v is not None:
            overrides[key] = tuple(v) if isinstance(v, list) else v
    if "max_objects" in overrides and "min_objects" not in overrides:
        overrides["min_objects"] = min(base.min_objects, overrides["max_objects"])
    try:
        return WorldConfig.from_dict({**base.to_dict(), **overrides})
    except ValueError as e:
        raise ValueError(f"world settings: {e}") from None


def cmd_world_render(args: argparse.Namespace) -> int:
    from .runs import next_run_dir
    from .world.export import export_dataset

    cfg = _world_config(args)
    out = Path(args.out) if args.out else next_run_dir("runs", "world")
    export_dataset(
        out,
        n=args.n,
        size=args.size,
        seed=args.seed,
        config=cfg,
        overwrite=args.overwrite,
        workers=args.workers,
        sheet_rows=args.sheet_rows,
        progress=not args.quiet,
        command=shlex.join(["fgdm", *args.argv]),
    )
    print(f"wrote {args.n} scenes to {out}" + (f" (contact sheet: {out / 'sheet.png'})" if args.sheet_rows else ""))
    return 0


def cmd_world_categories(args: argparse.Namespace) -> int:
    from .world.categories import CATEGORIES
    from .world.palette import PALETTE
    from .world.sprites import sprites_by_category

    sprites = sprites_by_category()
    rows = [
        {
            "id": c.id, "name": c.name, "kind": c.kind, "singular": c.singular, "plural": c.plural,
            "synonyms": [s for s, _ in c.synonyms], "color": list(PALETTE[c.id]),
            "sprites": len(sprites.get(c.name, ())),
        }
        for c in CATEGORIES
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            syn = f"  (also: {', '.join(r['synonyms'])})" if r["synonyms"] else ""
            sprites = f"{r['sprites']} sprite{'s' if r['sprites'] != 1 else ' '}"
            print(f"{r['id']:3d}  {r['kind']:5s}  {r['name']:15s} {sprites}  rgb{tuple(r['color'])}{syn}")
    return 0


def cmd_world_parse(args: argparse.Namespace) -> int:
    from .world.prompts import read_prompts
    from .world.vocab import parse_prompt

    prompts = list(args.prompt)
    if args.prompts:
        prompts += read_prompts(args.prompts)
    if not prompts:
        raise ValueError("prompt: give at least one prompt, or --prompts FILE")
    results = []
    for p in prompts:
        parsed = parse_prompt(p)
        results.append({
            "prompt": p, "categories": list(parsed.things), "stuff": list(parsed.stuff),
            "counts": {m.category: m.count for m in parsed.mentions if m.count is not None},
            "unknown": list(parsed.unknown),
        })  # fmt: skip
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=1))
    else:
        for r in results:  # "-> dog x2, wine glass; stuff: grass   unknown words: ..."
            things = [f"{c} x{r['counts'][c]}" if r["counts"].get(c, 1) > 1 else c for c in r["categories"]]
            stuff = f"; stuff: {', '.join(r['stuff'])}" if r["stuff"] else ""
            unk = f"   unknown words: {', '.join(r['unknown'])}" if r["unknown"] else ""
            print(f"{r['prompt']}\n  -> {', '.join(things) or '(no known objects)'}{stuff}{unk}")
    return 0


def cmd_world_decode(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .world.categories import category
    from .world.conditions import class_areas, decode_segmentation, encode_segmentation

    try:
        img = np.asarray(Image.open(args.image).convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"image {args.image!r} cannot be read as an image: {e}") from None
    seg = decode_segmentation(img, tolerance=args.tolerance, min_area=args.min_area)
    areas = class_areas(seg)
    result = [
        {"id": i, "name": category(i).name, "area": round(a, 5)} for i, a in sorted(areas.items(), key=lambda x: -x[1])
    ]
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise ValueError(f"out {str(out)!r} exists; pass --overwrite to replace it")
        Image.fromarray(encode_segmentation(seg)).save(out)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for r in result:
            print(f"{r['name']:15s} {100 * r['area']:6.2f}%")
    return 0


def cmd_world_stats(args: argparse.Namespace) -> int:
    from .world.export import export_stats, read_samples

    stats = export_stats(read_samples(args.folder))
    _print_result(stats, args.json)
    return 0


def cmd_world_sheet(args: argparse.Namespace) -> int:
    from .world.export import folders_sheet
    from .world.sheet import save_sheet

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {args.out!r}")
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out {args.out!r} exists; pass --overwrite to replace it")
    sheet = folders_sheet(args.folders, columns=tuple(args.columns), rows=args.rows, cell=args.cell)
    save_sheet(sheet, out)
    print(f"wrote {out} ({sheet.width}x{sheet.height})")
    return 0


# ----------------------------------------------------------------------------- generation


def _device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is available")
    return name


def cmd_generate(args: argparse.Namespace) -> int:
    from .attention import LayerSelector
    from .pipelines.text2image import Text2ImagePipeline, attention_grid
    from .runs import check_output_dir, next_run_dir, staged_output, write_json

    if args.export_dataset is not None or args.prompts is not None:
        return cmd_generate_dataset(args)
    if args.resume:
        raise ValueError("--resume continues an interrupted --export-dataset; a single generation has nothing to resume")
    if args.prompt is None:
        raise ValueError("give a prompt (or --prompts FILE with --export-dataset DIR)")
    if not args.prompt.strip():
        raise ValueError("prompt is empty")
    if args.sbpc is not None and args.best_of is not None:
        raise ValueError("--sbpc and --best-of are two searches (seg maps, or whole images); pass one")
    if args.sbpc is not None:
        return cmd_generate_sbpc(args)
    if args.best_of is not None:
        return cmd_generate_best_of(args)
    if args.judge is not None:
        raise ValueError("--judge scores the images of --best-of N; pass --best-of too")
    for opt in SBPC_OPTIONS:
        if getattr(args, opt) is not None and getattr(args, opt) is not False:  # (a weight of 0 is set)
            raise ValueError(f"--{opt.replace('_', '-')} is an SBPC option; pass --sbpc N (or --best-of N) too")
    if args.factors is not None:
        return cmd_generate_fgdm(args)
    for opt in ("graph", "mode", "cond_size", "cond_steps"):
        if getattr(args, opt) is not None:
            raise ValueError(f"--{opt.replace('_', '-')} is an FG-DM option; pass --factors too (e.g. --factors seg,image)")
    args.steps = 25 if args.steps is None else args.steps
    args.guidance_scale = 7.5 if args.guidance_scale is None else args.guidance_scale
    out = check_output_dir(args.out or next_run_dir("runs", "generate"), marker="record.json", overwrite=args.overwrite)
    device = _device(args.device)
    pipe = Text2ImagePipeline.from_pretrained(args.model, device=device)
    size = args.size or pipe.model.unet.config.sample_size * pipe.model.vae_scale_factor
    batch = args.batch_size
    images, grids, seeds, timings = [], [], [], Counter()
    for chunk in _chunks(args.seed, args.n, batch):  # image i keeps seed + i whatever the batch size
        result = pipe(
            args.prompt, num_images_per_prompt=len(chunk), num_inference_steps=args.steps, seed=chunk,
            guidance_scale=args.guidance_scale, size=size, eta=args.eta or 0.0, negative_prompt=args.negative_prompt,
            attention=LayerSelector(kinds=("cross",)) if args.save_attention else None, progress=not args.quiet,
        )  # fmt: skip
        images += result.images
        seeds += result.seeds
        timings.update(result.timings)
        if result.attention is not None:
            n = len(result.images)
            maps = result.attention.aggregate("cross", size=size // pipe.model.vae_scale_factor,
                                              batch=slice(n, 2 * n) if args.guidance_scale != 1 else None)  # fmt: skip
            grids += [attention_grid(img, maps[i], result.tokens[i]) for i, img in enumerate(result.images)]
    with staged_output(out, marker="record.json", overwrite=args.overwrite) as stage:
        files = []
        for i, img in enumerate(images):
            img.save(stage / f"image-{i:03d}.png")
            files.append(f"image-{i:03d}.png")
        for i, grid in enumerate(grids):
            grid.save(stage / f"attention-{i:03d}.png")
            files.append(f"attention-{i:03d}.png")
        write_json(stage / "record.json", {
            "kind": "generate", "prompt": args.prompt, "negative_prompt": args.negative_prompt,
            "seeds": seeds, "files": files,
            "model": {"path": str(pipe.model.path), "fingerprint": pipe.model.fingerprint},
            "parameters": {"n": args.n, "steps": args.steps, "guidance_scale": args.guidance_scale, "size": size,
                           "eta": args.eta or 0.0, "sampler": "ddim", "save_attention": args.save_attention,
                           "batch_size": batch},
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "device": device, "command": shlex.join(["fgdm", *args.argv]), "versions": _versions(),
        })  # fmt: skip
    print(f"wrote {len(images)} image(s) to {out} in {timings['total_s']:.2f} s")
    return 0


def _chunks(seed: int, n: int, batch: int) -> list[list[int]]:
    """The seeds of ``n`` images (``seed + i``) in calls of at most ``batch``."""
    return [list(range(seed + a, seed + min(n, a + batch))) for a in range(0, n, batch)]


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars (on stderr) for an eval: always with a table, and with ``--json`` (on stdout)
    when stderr is a terminal, so a long run is never silent to the person watching it; never with
    ``--quiet`` (e.g. stderr kept in a log file)."""
    if getattr(args, "quiet", False):
        return False
    return not getattr(args, "json", False) or sys.stderr.isatty()


def _versions() -> dict:
    import platform

    import diffusers
    import torch

    from . import __version__

    return {"fgdm": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}  # fmt: skip


def _check_sizes(pipe, **sizes: int | None) -> None:
    """``--size`` / ``--cond-size`` against the loaded model's size factor, naming the option."""
    f = pipe.base.size_factor
    for name, v in sizes.items():
        if v is not None and v % f:
            raise ValueError(f"--{name.replace('_', '-')} must be a multiple of {f} for this model, got {v}")


def cmd_generate_fgdm(args: argparse.Namespace) -> int:
    """``fgdm generate PROMPT --factors seg,image``: sample through the FG-DM factor graph."""
    from .compliance.recall import PRESENCE_MIN_AREA, object_recall, present_categories
    from .pipelines.factor_graph import FactorGraphPipeline, merge_outputs
    from .runs import check_output_dir, next_run_dir, staged_output, write_json
    from .world.vocab import parse_prompt

    if args.save_attention:
        raise ValueError("--save-attention is not available with --factors yet")
    out = check_output_dir(args.out or next_run_dir("runs", "generate"), marker="record.json", overwrite=args.overwrite)
    device = _device(args.device)
    pipe = FactorGraphPipeline.from_pretrained(args.graph, model=args.model, device=device)
    _check_sizes(pipe, size=args.size, cond_size=args.cond_size)
    factors = list(dict.fromkeys(args.factors))
    bad = [f for f in factors if f not in pipe.spec.factors]
    if bad:
        raise ValueError(f"--factors: {bad} not in the graph; it has {list(pipe.spec.factors)}")
    sizes, steps, guidance = {}, {}, {}
    for f in factors:
        if f == "image":
            for d, v in ((sizes, args.size), (steps, args.steps), (guidance, args.guidance_scale)):
                if v is not None:
                    d[f] = v
        else:
            for d, v in ((sizes, args.cond_size), (steps, args.cond_steps)):
                if v is not None:
                    d[f] = v
    mode = args.mode or "joint"
    batch = args.batch_size
    parts = [pipe(args.prompt, factors=factors, num_images_per_prompt=len(chunk), seed=chunk, mode=mode, sizes=sizes,
                  steps=steps, guidance=guidance, negative_prompt=args.negative_prompt, eta=args.eta,
                  progress=not args.quiet) for chunk in _chunks(args.seed, args.n, batch)]  # fmt: skip
    result = parts[0] if len(parts) == 1 else merge_outputs(parts)
    with staged_output(out, marker="record.json", overwrite=args.overwrite) as stage:
        files: list[str] = []
        samples = [{"seed": sd} for sd in result.seeds]
        for i, img in enumerate(result.images):
            img.save(stage / f"image-{i:03d}.png")
            files.append(f"image-{i:03d}.png")
        for name, maps in result.maps.items():
            for i, m in enumerate(maps):
                from PIL import Image

                Image.fromarray(m).save(stage / f"{name}-{i:03d}.png")
                files.append(f"{name}-{i:03d}.png")
        wanted = parse_prompt(args.prompt).things
        for i, lab in enumerate(result.labels or []):
            present = present_categories(lab)
            samples[i]["seg_objects"] = sorted(present)
            samples[i]["seg_object_recall"] = object_recall(wanted, present) if wanted else None
        for i, fit in enumerate(result.palette_fit or []):
            samples[i]["seg_palette_fit"] = round(fit, 4)
        spec = pipe.spec.factors
        write_json(stage / "record.json", {
            "kind": "generate-fgdm", "prompt": args.prompt, "negative_prompt": args.negative_prompt,
            "seeds": result.seeds, "files": files, "samples": samples, "presence_min_area": PRESENCE_MIN_AREA,
            "graph": {"path": str(pipe.path), "factors": {n: s.to_dict() for n, s in spec.items()}},
            "model": {"path": str(pipe.base.path), "fingerprint": pipe.base.fingerprint},
            "parameters": {"factors": factors, "mode": mode, "n": args.n, "batch_size": batch, "eta": args.eta,
                           "sampler": "ddim",
                           "per_factor": {f: {"size": sizes.get(f, spec[f].size or pipe.native_size()),
                                              "steps": steps.get(f, spec[f].steps),
                                              "guidance": guidance.get(f, spec[f].guidance),
                                              "eta": spec[f].eta if args.eta is None else args.eta} for f in factors}},
            "timings": {k: round(v, 4) for k, v in result.timings.items()},
            "device": device, "command": shlex.join(["fgdm", *args.argv]), "versions": _versions(),
        })  # fmt: skip
    print(f"wrote {len(result.seeds)} FG-DM sample(s) ({', '.join(factors)}) to {out} in {result.timings['total_s']:.2f} s")
    short = [(s["seed"], sorted(set(wanted) - set(s["seg_objects"]))) for s in samples
             if s.get("seg_object_recall") is not None and s["seg_object_recall"] < 1]  # fmt: skip
    if short:  # say so: edits by name need the object in the map, and SBPC exists for exactly this
        print(f"note: {len(short)} of {len(samples)} seg map(s) lack some of the prompt's objects ("
              + "; ".join(f"seed {sd}: {', '.join(miss)}" for sd, miss in short[:4]) + ("; ..." if len(short) > 4 else "")
              + "); --sbpc N keeps the best of N maps", file=sys.stderr)  # fmt: skip
    return 0


def cmd_generate_dataset(args: argparse.Namespace) -> int:
    """``fgdm generate --prompts FILE --export-dataset DIR``: a labelled dataset sampled by FG-DM."""
    from .eval.datasets import export_generated
    from .pipelines.factor_graph import FactorGraphPipeline
    from .world.prompts import read_prompts

    if args.prompts is None or args.export_dataset is None:
        raise ValueError("--prompts and --export-dataset go together (a labelled dataset from a prompt file)")
    if args.prompt is not None:
        raise ValueError("give either a prompt or --prompts FILE, not both")
    per_sample = ("keep_candidates",) if args.sbpc is not None else SBPC_OPTIONS  # a sheet per sample: no
    for opt in ("best_of", "judge", *per_sample):
        if getattr(args, opt) is not None and getattr(args, opt) is not False:  # (a weight of 0 is set)
            hint = "" if args.sbpc is not None or opt in ("best_of", "judge") else " without --sbpc N"
            raise ValueError(f"--{opt.replace('_', '-')} is not available with --export-dataset{hint}")
    for opt, why in (("eta", "each factor samples with its graph.yaml eta"), ("size", "each factor samples at its own size"),
                     ("guidance_scale", "each factor samples with its graph.yaml guidance"),
                     ("negative_prompt", "the captions are the prompts"), ("save_attention", "")):  # fmt: skip
        if getattr(args, opt) not in (None, False, ""):  # not silently ignored
            raise ValueError(f"--{opt.replace('_', '-')} is not available with --export-dataset" + (why and f"; {why}"))
    if args.split_steps is not None and args.split_objects is None:
        raise ValueError("--split-steps is the share of the steps --split-objects draws one object at a time; "
                         "pass --split-objects W too")  # fmt: skip
    prompts = read_prompts(args.prompts, "--prompts")[: args.limit]
    pipe = FactorGraphPipeline.from_pretrained(args.graph, model=args.model, device=_device(args.device))
    factors = list(dict.fromkeys(args.factors)) if args.factors else None
    search = None
    if args.sbpc is not None:  # --cond-steps / --cond-size are the candidates' (default 10 / 64)
        search = {"n": args.sbpc, "cond_steps": args.cond_steps or 10, "cond_size": args.cond_size or 64,
                  "early_stop": args.early_stop, "complete": args.complete, "split": args.split_objects,
                  "split_steps": args.split_steps}  # fmt: skip
        _check_sizes(pipe, cond_size=search["cond_size"])
        steps = {"image": args.steps} if args.steps and "image" in pipe.spec.factors else {}
        sizes = {}
    else:
        _check_sizes(pipe, cond_size=args.cond_size)
        steps = {f: args.cond_steps for f in pipe.spec.factors if f != "image" and args.cond_steps}
        if args.steps and "image" in pipe.spec.factors:
            steps["image"] = args.steps
        sizes = {f: args.cond_size for f in pipe.spec.factors if f != "image" and args.cond_size}
    out = export_generated(pipe, prompts, args.export_dataset, per_prompt=args.n, seed=args.seed, factors=factors,
                           mode=args.mode or "joint", steps=steps or None, sizes=sizes or None,
                           overwrite=args.overwrite, resume=args.resume, batch_size=args.batch_size,
                           progress=not args.quiet, command=shlex.join(["fgdm", *args.argv]), sbpc=search)  # fmt: skip
    print(f"wrote {len(prompts) * args.n} generated sample(s) to {out}")
    return 0


def cmd_generate_sbpc(args: argparse.Namespace) -> int:
    """``fgdm generate PROMPT --sbpc N``: best of N low-cost seg maps by object recall, then the image."""
    from PIL import Image

    from .compliance.recall import PRESENCE_MIN_AREA
    from .compliance.sbpc import sbpc
    from .pipelines.factor_graph import FactorGraphPipeline
    from .runs import check_output_dir, next_run_dir, staged_output, write_json
    from .world.sheet import candidate_sheet

    if args.save_attention:
        raise ValueError("--save-attention is not available with --sbpc")
    if args.n != 1:
        raise ValueError(f"--n must be 1 with --sbpc (the search returns one image), got {args.n}")
    if args.eta is not None:
        raise ValueError("--eta is not available with --sbpc; each factor samples with its graph.yaml eta")
    if args.split_steps is not None and args.split_objects is None:
        raise ValueError("--split-steps is the share of the steps --split-objects draws one object at a time; "
                         "pass --split-objects W too")  # fmt: skip
    out = check_output_dir(args.out or next_run_dir("runs", "generate"), marker="record.json", overwrite=args.overwrite)
    device = _device(args.device)
    pipe = FactorGraphPipeline.from_pretrained(args.graph, model=args.model, device=device)
    factors = None
    if args.factors is not None:
        factors = [f for f in dict.fromkeys(args.factors) if f != "seg"]
        bad = [f for f in factors if f not in pipe.spec.factors]
        if bad:
            raise ValueError(f"--factors: {bad} not in the graph; it has {list(pipe.spec.factors)}")
    cond_steps, cond_size = args.cond_steps or 10, args.cond_size or 64
    _check_sizes(pipe, size=args.size, cond_size=cond_size)
    res = sbpc(pipe, args.prompt, n=args.sbpc, cond_steps=cond_steps, cond_size=cond_size, seed=args.seed,
               early_stop=args.early_stop, factors=factors, image_size=args.size, image_steps=args.steps,
               guidance=args.guidance_scale, keep_candidates=args.keep_candidates, mode=args.mode or "joint",
               complete=args.complete, split=args.split_objects, split_steps=args.split_steps or 1.0,
               progress=not args.quiet)  # fmt: skip
    with staged_output(out, marker="record.json", overwrite=args.overwrite) as stage:
        files = []
        if res.image is not None:
            res.image.save(stage / "image-000.png")
            files.append("image-000.png")
        for name, m in res.maps.items():
            Image.fromarray(m).save(stage / f"{name}-000.png")
            files.append(f"{name}-000.png")
        if args.keep_candidates:
            candidate_sheet(res.candidate_maps, res.candidates, res.chosen).save(stage / "candidates.png")
            files.append("candidates.png")
        write_json(stage / "record.json", {
            "kind": "generate-sbpc", "prompt": args.prompt, "objects": res.objects, "unknown_words": res.unknown,
            "candidates": [c.to_dict() for c in res.candidates], "chosen": res.chosen,
            "chosen_recall": res.candidates[res.chosen].recall, "stopped_early": res.stopped_early,
            "completion": None if res.completion is None else {"edits": res.completion,
                                                              "recall_after": res.completed_recall},
            "choice_rule": "max recall, then max area of the prompt's objects, then the earliest candidate",
            "presence_min_area": PRESENCE_MIN_AREA, "files": files,
            "graph": {"path": str(pipe.path), "factors": {n: s.to_dict() for n, s in pipe.spec.factors.items()}},
            "model": {"path": str(pipe.base.path), "fingerprint": pipe.base.fingerprint},
            "parameters": {"sbpc": args.sbpc, "cond_steps": cond_steps, "cond_size": cond_size, "seed": args.seed,
                           "early_stop": args.early_stop, "mode": args.mode or "joint", "complete": args.complete,
                           "split_objects": args.split_objects, "split_steps": args.split_steps or 1.0,
                           "image_size": args.size or pipe.native_size(), "image_steps": args.steps,
                           "guidance_scale": args.guidance_scale},
            "timings": {k: round(v, 4) for k, v in res.timings.items()},
            "device": device, "command": shlex.join(["fgdm", *args.argv]), "versions": _versions(),
        })  # fmt: skip
    best = res.candidates[res.chosen]
    done = "" if res.completion is None else f", {res.completed_recall:.2f} after {len(res.completion)} class change(s)"
    print(f"SBPC: best of {len(res.candidates)} maps has recall {best.recall:.2f} (candidate {best.index}){done}; "
          f"wrote {out} in {res.timings['total_s']:.2f} s")  # fmt: skip
    return 0


def cmd_generate_best_of(args: argparse.Namespace) -> int:
    """``fgdm generate PROMPT --best-of N``: N base-model images, the judge's best by object recall."""
    import numpy as np

    from .compliance.best_of import best_of_images
    from .compliance.recall import PRESENCE_MIN_AREA
    from .models.judge import default_judge_dir, load_judge
    from .models.pipeline import fingerprint
    from .pipelines.text2image import Text2ImagePipeline
    from .runs import check_output_dir, next_run_dir, staged_output, write_json
    from .world.sheet import candidate_sheet

    for opt in ("factors", "graph", "mode", "cond_size", "cond_steps", "eta"):
        if getattr(args, opt) is not None:
            raise ValueError(f"--{opt.replace('_', '-')} is not available with --best-of (base-model images)")
    if args.complete:
        raise ValueError("--complete relabels a seg map; --best-of has none (use --sbpc N --complete)")
    for opt in ("split_objects", "split_steps"):
        if getattr(args, opt) is not None:
            raise ValueError(f"--{opt.replace('_', '-')} draws a seg map one object at a time; --best-of has none "
                             "(use --sbpc N)")  # fmt: skip
    if args.save_attention:
        raise ValueError("--save-attention is not available with --best-of")
    if args.n != 1:
        raise ValueError(f"--n must be 1 with --best-of (the search returns one image), got {args.n}")
    out = check_output_dir(args.out or next_run_dir("runs", "generate"), marker="record.json", overwrite=args.overwrite)
    device = _device(args.device)
    pipe = Text2ImagePipeline.from_pretrained(args.model, device=device)
    judge_dir = args.judge or default_judge_dir()
    judge = load_judge(judge_dir, device)
    steps = 25 if args.steps is None else args.steps
    guidance = 7.5 if args.guidance_scale is None else args.guidance_scale
    n = args.best_of
    batch = args.batch_size if args.early_stop is None else min(args.batch_size, max(1, -(-n // 5)))
    res = best_of_images(pipe, judge, args.prompt, n=n, seed=args.seed, steps=steps, guidance=guidance,
                         size=args.size, negative_prompt=args.negative_prompt, batch_size=batch,
                         early_stop=args.early_stop, progress=not args.quiet)  # fmt: skip
    with staged_output(out, marker="record.json", overwrite=args.overwrite) as stage:
        res.image.save(stage / "image-000.png")
        files = ["image-000.png"]
        if args.keep_candidates:
            candidate_sheet([np.asarray(im) for im in res.images], res.candidates, res.chosen).save(stage / "candidates.png")
            files.append("candidates.png")
        write_json(stage / "record.json", {
            "kind": "generate-best-of", "prompt": args.prompt, "negative_prompt": args.negative_prompt,
            "objects": res.objects, "unknown_words": res.unknown,
            "candidates": [c.to_dict() for c in res.candidates], "chosen": res.chosen,
            "chosen_recall": res.candidates[res.chosen].recall, "stopped_early": res.stopped_early,
            "choice_rule": "max recall (the judge's, of the prompt's objects), then the earliest image",
            "presence_min_area": PRESENCE_MIN_AREA, "files": files,
            "model": {"path": str(pipe.model.path), "fingerprint": pipe.model.fingerprint},
            "judge": {"path": str(judge_dir), "fingerprint": fingerprint(judge_dir)},
            "parameters": {"best_of": n, "seed": args.seed, "steps": steps, "guidance_scale": guidance,
                           "size": args.size or pipe.model.unet.config.sample_size * pipe.model.vae_scale_factor,
                           "early_stop": args.early_stop, "batch_size": batch},
            "timings": {k: round(v, 4) for k, v in res.timings.items()},
            "device": device, "command": shlex.join(["fgdm", *args.argv]), "versions": _versions(),
        })  # fmt: skip
    best = res.candidates[res.chosen]
    print(f"best of {len(res.candidates)} images has recall {best.recall:.2f} (image {best.index}, seed {best.seed}); "
          f"wrote {out} in {res.timings['total_s']:.2f} s")  # fmt: skip
    return 0


class _EditAction(argparse.Action):
    """Collect edit flags in the order given (``--move dog:+20,0 --flip dog`` moves, then flips)."""

    def __call__(self, parser, namespace, values, option_string=None):
        edits = list(getattr(namespace, "edits", None) or [])
        edits.append((self.dest, values))
        namespace.edits = edits


def _target(text: str):
    text = text.strip()
    if not text:
        raise ValueError("empty object name")
    return int(text) if text.isdigit() else text


def _offset(text: str, flag: str) -> tuple[int, int]:
    try:
        dx, dy = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag}: expected an offset dx,dy like +20,-5, got {text!r}") from None
    return dx, dy


def _parse_edit(op: str, value: str) -> dict:
    """One command-line edit as a replayable dict."""
    flag = "--" + op.replace("_", "-")
    if op in ("move", "duplicate"):
        target, _, off = value.rpartition(":")
        if not target:
            raise ValueError(f"{flag}: expected OBJECT:dx,dy (e.g. dog:+20,0), got {value!r}")
        dx, dy = _offset(off, flag)
        return {"op": op, "target": _target(target), "dx": dx, "dy": dy}
    if op == "resize":
        target, _, scale = value.rpartition(":")
        try:
            return {"op": op, "target": _target(target), "scale": float(scale)}
        except ValueError:
            raise ValueError(f"{flag}: expected OBJECT:SCALE (e.g. cat:1.5), got {value!r}") from None
    if op in ("flip", "delete"):
        return {"op": op, "target": _target(value)}
    if op == "change_class":
        target, _, new = value.rpartition(":")
        if not target or not new:
            raise ValueError(f"{flag}: expected OBJECT:NEW_CLASS (e.g. dog:cat), got {value!r}")
        return {"op": op, "target": _target(target), "new": new.strip()}
    if op == "text":
        return {"op": op, "text": value}
    if op == "paste":
        parts = value.rsplit(":", 2)
        if len(parts) != 3:
            raise ValueError(f"{flag}: expected RUN_DIR:OBJECT:dx,dy, got {value!r}")
        dx, dy = _offset(parts[2], flag)
        run, sample = parts[0], 0
        m = re.fullmatch(r"(.+)#(\d+)", run)  # RUN#K: the run's (or export's) sample K
        if m:
            run, sample = m.group(1), int(m.group(2))
        return {"op": op, "source_run": run, "source_sample": sample, "target": _target(parts[1]), "dx": dx, "dy": dy}
    raise ValueError(f"unknown edit {op!r}")


def cmd_edit(args: argparse.Namespace) -> int:
    """``fgdm edit RUN_DIR --move dog:+20,0 ...``: edit a sample's maps, re-render its image, same seed."""
    import time

    import numpy as np
    from PIL import Image

    from .editing import apply_edits, sample_conditions, sample_from_run
    from .editing.real import FILL_GUIDANCE, fills_only, map_edit_prompt, render_region
    from .pipelines.factor_graph import FactorGraphPipeline
    from .runs import check_output_dir, next_run_dir, staged_output, write_json
    from .world.conditions import encode_normals, encode_segmentation, encode_sketch
    from .world.sheet import contact_sheet

    edits: list[dict] = []
    if args.edits_from:
        try:
            edits = list(json.loads(Path(args.edits_from).read_text())["edits"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"--edits-from {args.edits_from!r}: not an edit record ({e})") from None
    edits += [_parse_edit(op, v) for op, v in (args.edits or [])]
    if not edits:
        raise ValueError("no edits given: use --move/--resize/--flip/--delete/--duplicate/--change-class/--text/--paste")
    sample, rec = sample_from_run(args.run, args.sample)
    out = check_output_dir(args.out or next_run_dir("runs", "edit"), marker="record.json", overwrite=args.overwrite)
    edited = apply_edits(sample, edits)
    graph = args.graph or rec["graph"]["path"]
    pipe = FactorGraphPipeline.from_pretrained(graph, device=_device(args.device))
    if "image" not in pipe.spec.factors:
        raise ValueError(f"graph {graph!r} has no image factor to re-render with")
    if rec["kind"] == "generate-fgdm":
        seed = rec["seeds"][args.sample]
        per = rec["parameters"]["per_factor"].get("image", {})
        size, steps, guidance = per.get("size"), per.get("steps"), per.get("guidance")
    elif rec["kind"] == "generate-sbpc":
        seed = rec["candidates"][rec["chosen"]]["seed"]
        p = rec["parameters"]
        size, steps, guidance = p.get("image_size"), p.get("image_steps"), p.get("guidance_scale")
    else:
        seed, p = rec["seed"], rec["parameters"]
        size, steps, guidance = p.get("size"), p.get("steps"), p.get("guidance")
    parents = pipe.spec.factors["image"].parents
    given = {k: v for k, v in sample_conditions(edited).items() if k in parents}
    source_prompt = rec.get("render_prompt") or rec["prompt"]  # an edited run's prompt already follows its maps
    prompt = source_prompt if args.keep_prompt else map_edit_prompt(source_prompt, sample.seg, edited.seg)
    idx = args.sample if rec["kind"] == "generate-fgdm" else 0
    before = Path(args.run) / f"image-{idx:03d}.png"
    render_guidance = guidance  # the run's (recorded as such for later edits), unless a deletion's is used below
    if args.keep_rest:  # regenerate only where the maps changed; the rest is the run's image, inverted and followed
        if not before.exists():
            raise ValueError(f"--keep-rest: run {args.run!r} has no {before.name} to keep")
        was = Image.open(before).convert("RGB")
        given_before = {k: v for k, v in sample_conditions(sample).items() if k in parents}
        if fills_only(sample.seg, edited.seg):  # only background to draw (a deletion): no guidance (results.md)
            render_guidance = FILL_GUIDANCE
        t0 = time.perf_counter()
        image = render_region(pipe, was, given_before, given, source_prompt, prompt, size=size or was.height,
                              steps=steps, seed=seed, guidance=render_guidance)  # fmt: skip
        timings = {"total_s": time.perf_counter() - t0}
    else:
        res = pipe(prompt, factors=["image"], given=given, seed=seed, sizes={"image": size} if size else None,
                   steps={"image": steps} if steps else None, guidance={"image": guidance} if guidance else None,
                   progress=not args.quiet)  # fmt: skip
        image, timings = res.images[0], res.timings
    with staged_output(out, marker="record.json", overwrite=args.overwrite) as stage:
        image.save(stage / "image-000.png")
        files = ["image-000.png"]
        maps = {"seg": encode_segmentation(edited.seg)}
        if edited.disparity is not None:  # normalised disparity in [0, 1]: the same 3-channel encoding as edges
            maps["depth"] = encode_sketch(edited.disparity)
            maps["normal"] = encode_normals(edited.normals)
        if edited.sketch is not None:
            maps["sketch"] = encode_sketch(edited.sketch)
        for name, m in maps.items():
            Image.fromarray(m).save(stage / f"{name}-000.png")
            files.append(f"{name}-000.png")
        row0 = [np.asarray(Image.open(before).convert("RGB")) if before.exists() else np.zeros_like(maps["seg"]),
                encode_segmentation(sample.seg)]  # fmt: skip
        contact_sheet([row0, [np.asarray(image), maps["seg"]]], headers=["image", "seg"],
                      captions=["before", "after: " + "; ".join(_describe(e) for e in edits)]).save(stage / "before_after.png")  # fmt: skip
        files.append("before_after.png")
        write_json(stage / "record.json", {
            "kind": "edit", "prompt": rec["prompt"], "render_prompt": prompt, "source": {"run": str(Path(args.run).resolve()), "sample": args.sample,
                                                              "kind": rec["kind"]},
            "edits": edits, "seed": seed, "files": files, "graph": {"path": str(pipe.path)},
            "model": {"path": str(pipe.base.path), "fingerprint": pipe.base.fingerprint},
            "parameters": {"size": size, "steps": steps, "guidance": guidance, "render_guidance": render_guidance,
                           "given": sorted(given),
                           "keep_prompt": args.keep_prompt, "keep_rest": args.keep_rest},
            "objects_before": sorted({n for n, _ in sample.objects().values()}),
            "objects_after": sorted({n for n, _ in edited.objects().values()}),
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "command": shlex.join(["fgdm", *args.argv]), "versions": _versions(),
        })  # fmt: skip
    print(f"applied {len(edits)} edit(s) and re-rendered (seed {seed}{', the rest kept' if args.keep_rest else ''}) into {out}")
    return 0


def _region_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-mask", action="store_true",
                   help="regenerate the whole map and image, not only the edited region (the rest then drifts; "
                        "as before the region lock)")  # fmt: skip
    p.add_argument("--guidance", type=_arg_type(_positive_float, "number"), default=None,
                   help="the re-render's guidance (default: the image factor's; 1 with --no-mask at pixel level, and "
                        "for an edit that only fills background in, such as a deletion: fgdm.editing.real.FILL_GUIDANCE)")
    p.add_argument("--depth", action=argparse.BooleanOptionalAction, default=None,
                   help="also give the image factor the judge's depth map, edited with the seg map (needs an image "
                        "factor that reads depth; default: fgdm.editing.real.DEPTH_DEFAULT where it does)")  # fmt: skip
    p.add_argument("--no-negative", action="store_true",
                   help="text edits: do not guide the seg factor away from the classes they remove or replace "
                        "(by default those classes are its negative prompt)")  # fmt: skip


def cmd_edit_real(args: argparse.Namespace) -> int:
    """``fgdm edit-real IMAGE --prompt P --replace dog:cat``: extract, invert, edit, re-render a real image."""
    import numpy as np
    from PIL import Image

    from .editing import apply_edits
    from .editing.real import edit_metrics, edit_real_image
    from .models.judge import default_judge_dir, load_judge
    from .models.pipeline import fingerprint
    from .pipelines.factor_graph import FactorGraphPipeline, condition_rgb
    from .runs import check_output_dir, next_run_dir, staged_output, write_json
    from .world.conditions import encode_segmentation
    from .world.sheet import contact_sheet

    try:
        image = Image.open(args.image).convert("RGB")
    except OSError as e:
        raise ValueError(f"image {args.image!r} cannot be read: {e}") from None
    replace = {}
    for r in args.replace or []:
        a, _, b = r.partition(":")
        if not a or not b:
            raise ValueError(f"--replace: expected OLD:NEW (e.g. dog:cat), got {r!r}")
        replace[a.strip()] = b.strip()
    edits = [_parse_edit(op, v) for op, v in (args.edits or [])]
    if any(e["op"] == "paste" for e in edits):
        raise ValueError("--paste is not available for real images")
    out = check_output_dir(args.out or next_run_dir("runs", "edit-real"), marker="record.json", overwrite=args.overwrite)
    device = _device(args.device)
    pipe = FactorGraphPipeline.from_pretrained(args.graph, device=device)
    judge = load_judge(args.judge, device)
    res = edit_real_image(pipe, judge, image, args.prompt, replace=replace, remove=args.remove or [],
                          map_edits=(lambda s: apply_edits(s, edits)) if edits else None, pixel=args.level == "pixel",
                          masked=not args.no_mask, steps=args.steps, seed=args.seed, guidance=args.guidance,
                          depth=args.depth, negative=not args.no_negative)  # fmt: skip
    metrics = edit_metrics(pipe, judge, image, args.prompt, res, steps=args.steps) if args.measure else None
    with staged_output(out, marker="record.json", overwrite=args.overwrite) as stage:
        size = res.source_map.shape[0]
        src = np.asarray(image.resize((size, size), Image.BILINEAR))
        res.image.save(stage / "image-000.png")
        Image.fromarray(encode_segmentation(res.source_map)).save(stage / "seg-source.png")
        Image.fromarray(encode_segmentation(res.edited_map)).save(stage / "seg-000.png")
        files = ["image-000.png", "seg-source.png", "seg-000.png"]
        rows = [[src, encode_segmentation(res.source_map)], [np.asarray(res.image), encode_segmentation(res.edited_map)]]
        if res.source_depth is not None:
            for name, d, row in (("depth-source.png", res.source_depth, rows[0]), ("depth-000.png", res.edited_depth, rows[1])):
                rgb = condition_rgb("depth", d, size)  # what the image factor reads
                Image.fromarray(rgb).save(stage / name)
                files.append(name)
                row.append(rgb)
        contact_sheet(rows, headers=["image", "seg", "depth"][: len(rows[0])],
                      captions=[f"source: {res.prompt}", f"edited: {res.edited_prompt}"]).save(stage / "before_after.png")  # fmt: skip
        write_json(stage / "record.json", {
            "kind": "edit-real", "image": str(Path(args.image).resolve()), "prompt": res.prompt,
            "edited_prompt": res.edited_prompt, "replace": replace, "remove": args.remove or [], "edits": edits,
            "level": args.level, "masked": not args.no_mask, "guidance": args.guidance, "render_guidance": res.render_guidance, "depth": res.source_depth is not None,
            "negative": not args.no_negative,
            "seed": args.seed, "steps": args.steps, "metrics": metrics, "files": [*files, "before_after.png"],
            "graph": {"path": str(pipe.path)}, "model": {"fingerprint": pipe.base.fingerprint},
            "judge_fingerprint": fingerprint(args.judge or default_judge_dir()),
            "timings": {k: round(v, 4) for k, v in res.timings.items()},
            "command": shlex.join(["fgdm", *args.argv]), "versions": _versions(),
        })  # fmt: skip
    print(f"edited {args.image} ({res.prompt!r} -> {res.edited_prompt!r}) into {out}"
          + (f"; {json.dumps(metrics)}" if metrics else ""))  # fmt: skip
    return 0


def _describe(e: dict) -> str:
    return " ".join([e["op"], *(f"{k}={v}" for k, v in e.items() if k not in ("op", "source_run", "source_sample"))])


def cmd_bench_factors(args: argparse.Namespace) -> int:
    from .eval.bench_factors import bench_factors

    result = bench_factors(args.model, batch=args.batch, distill_batch=args.distill_batch,
                           distill_every=args.distill_every, steps=args.steps, n=args.n,
                           sample_batch=args.sample_batch, device=_device(args.device))  # fmt: skip
    _print_result(result, args.json)
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from .eval.bench_train import bench_train
    from .training.config import load_train_config

    cfg = load_train_config(args.config, settings=args.set)
    result = bench_train(cfg, batch=args.batch, steps=args.steps, warmup=args.warmup, compile=args.compile,
                         device=_device(args.device))  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        side = f"{result['latent']}x{result['latent']} latents" if "latent" in result else f"{result['size']} px"
        print(f"{result['component']}: {result['parameters']:,} parameters, batch {result['batch']}, {side}, "
              f"{result['machine']}")  # fmt: skip
        for r in result["variants"]:
            print(f"  {r['variant']:28s} {r['ms_per_step']:9.2f} ms/step {r['samples_per_s']:9.1f} samples/s "
                  f"x{r['speedup']:.2f}" + (f"  {r['peak_memory_gb']} GB" if "peak_memory_gb" in r else ""))  # fmt: skip
    return 0


def cmd_bench_encode(args: argparse.Namespace) -> int:
    from .eval.bench_encode import bench_encode

    result = bench_encode(args.vae, size=args.size, batch=args.batch, n=args.n, device=_device(args.device))
    _print_result(result, args.json)
    return 0


def cmd_bench_generate(args: argparse.Namespace) -> int:
    from .eval.bench_generate import bench_generate

    result = bench_generate(args.model, size=args.size, steps=args.steps, n=args.n, device=_device(args.device),
                            batches=args.batch)  # fmt: skip
    _print_result(result, args.json)
    return 0


# ----------------------------------------------------------------------------- training


def cmd_train(args: argparse.Namespace) -> int:
    from .training.loop import budget_clock

    with budget_clock():  # --max-minutes counts pre-rendering and compilation too
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from .training.components import TRAINERS
    from .training.config import load_train_config

    overrides = {"steps": args.steps, "output_dir": args.output_dir, "max_minutes": args.max_minutes}
    cfg = load_train_config(args.config, overrides, args.set)
    if cfg.component != args.component:
        raise ValueError(f"config {args.config!r} is for component {cfg.component!r}, not {args.component!r}")
    from .training.checkpoint import latest_checkpoint

    has = latest_checkpoint(Path(cfg.output_dir)) is not None  # checked before any rendering or pre-encoding
    if has and not args.resume:
        raise ValueError(f"output_dir {cfg.output_dir!r} already holds checkpoints; pass --resume or choose another")
    if args.resume and not has:
        raise ValueError(f"--resume: no checkpoint in {str(Path(cfg.output_dir) / 'checkpoints')!r}")
    metrics = TRAINERS[args.component](cfg, resume=args.resume, progress=not args.quiet)
    print(json.dumps(metrics, indent=1))
    return 0


def cmd_train_assemble(args: argparse.Namespace) -> int:
    from .runs import staged_output
    from .training.components import assemble_pipeline

    with staged_output(args.out, marker="model_index.json", overwrite=args.overwrite) as stage:
        assemble_pipeline(tokenizer=args.tokenizer, text_encoder=args.text_encoder, vae=args.vae, unet=args.unet,
                          out=stage, fp16=not args.fp32, unet_config=args.unet_config)  # fmt: skip
    print(f"assembled a Stable Diffusion pipeline at {args.out}")
    return 0


def cmd_train_assemble_clip(args: argparse.Namespace) -> int:
    from .models.miniclip import load_eval_clip, save_eval_clip
    from .runs import staged_output

    clip, tok = load_eval_clip(args.clip, text_encoder=args.text_encoder)
    marker = "config.json"  # either kind of MiniCLIP folder: --overwrite may replace one with the other
    if args.with_text:  # a complete CLIPModel: the pipeline's text encoder is no longer this text tower
        with staged_output(args.out, marker=marker, overwrite=args.overwrite) as stage:
            clip.half().save_pretrained(stage, safe_serialization=True)
            tok.save_pretrained(stage)
        print(f"wrote the evaluation MiniCLIP (both towers and projections, fp16) to {args.out}")
        return 0
    with staged_output(args.out, marker=marker, overwrite=args.overwrite) as stage:
        save_eval_clip(clip, stage)  # the tokenizer, like the text tower, is the pipeline's
    print(f"wrote the evaluation MiniCLIP (image tower + projections, fp16) to {args.out}")
    return 0


def _named_graph(item: str, option: str, form: str, example: str, device: str | None = None):
    """``NAME=GRAPH_DIR`` (``--take``, ``--ablation``): the name and the loaded graph, or a clear error."""
    from .pipelines.factor_graph import FactorGraphPipeline

    name, sep, folder = item.partition("=")
    if not sep or not name.strip() or not folder.strip():
        raise ValueError(f"{option} {item!r}: expected {form}, e.g. {example}")
    try:
        return name.strip(), FactorGraphPipeline.from_pretrained(folder.strip(), device=device)
    except ValueError as e:
        raise ValueError(f"{option} {item!r}: {e}") from None


def cmd_train_assemble_graph(args: argparse.Namespace) -> int:
    from .pipelines.factor_graph import FactorGraphPipeline

    pipe = FactorGraphPipeline.from_pretrained(args.graph)
    taken = []
    for item in args.take or []:
        name, other = _named_graph(item, "--take", "FACTOR=GRAPH_FOLDER", "seg=runs/train/graph_scratch_cpu")
        pipe = pipe.with_factors_from(other, [name])
        taken.append(f"{name} from {other.path}")
    if args.drop_parents and not args.factors:
        raise ValueError("--drop-parents goes with --factors (the parents not kept are dropped)")
    before = {n: f.parents for n, f in pipe.spec.factors.items()}
    if args.factors:
        pipe = pipe.subset(args.factors, drop_parents=args.drop_parents)
    pipe.save_pretrained(args.out, overwrite=args.overwrite, fp16=not args.fp32)
    dropped = [f"{n} without {', '.join(p for p in before[n] if p not in f.parents)}"
               for n, f in pipe.spec.factors.items() if f.parents != before[n]]  # fmt: skip
    notes = "; ".join(taken + dropped)
    print(f"wrote the graph {list(pipe.spec.factors)} to {args.out}" + (f" ({notes})" if notes else ""))
    return 0


# ----------------------------------------------------------------------------- bench


def cmd_bench_world(args: argparse.Namespace) -> int:
    from .eval.bench_world import bench_world

    result = bench_world(size=args.size, n=args.n, workers=args.workers)
    _print_result(result, args.json)
    return 0


def cmd_eval_judge(args: argparse.Namespace) -> int:
    from .models.judge import load_judge
    from .training.judge import evaluate_judge

    _check_sheet(args.sheet, args.overwrite)
    _check_sheet(args.per_class_plot, args.overwrite, "--per-class-plot")
    judge = load_judge(args.judge, _device(args.device))
    if args.flip_average is not None:  # else the judge's own setting (its config.json)
        judge.config.flip_average = args.flip_average
    if args.tta_sizes is not None:  # "none": the judge's input_size alone
        judge.config.tta_sizes = args.tta_sizes or None  # checked by the argument's parser
    result = evaluate_judge(judge, n=args.n, seed=args.seed, size=args.size, progress=_progress(args),
                            sheet=args.sheet, sheet_rows=args.sheet_rows)  # fmt: skip
    if args.per_class_plot is not None:
        from .eval.plots import per_class_chart

        title = (f"judge presence per class: {args.n} held-out renders, seed {args.seed} (worst F1 first; "
                 "in brackets: renders showing the class)")  # fmt: skip
        per_class_chart(result["per_class"], title=title).save(args.per_class_plot)
        result["per_class_plot"] = str(args.per_class_plot)
    if not args.per_class:
        result.pop("per_class")
    _print_result(result, args.json)
    return 0


def _check_sheet(path: Path | None, overwrite: bool, arg: str = "--sheet") -> None:
    if path is not None:
        if path.suffix.lower() != ".png":
            raise ValueError(f"{arg} {str(path)!r} must be a .png file")
        if path.exists() and not overwrite:
            raise ValueError(f"{arg} {str(path)!r} exists; pass --overwrite to replace it")


def _holdout_config(component: str, args: argparse.Namespace):
    from .training.config import DataConfig, TrainConfig

    return TrainConfig(component=component, output_dir=".",
                       data=DataConfig(size=args.size, holdout_seed=args.seed, holdout_n=args.n))  # fmt: skip


def cmd_eval_vae(args: argparse.Namespace) -> int:
    from .training.components import evaluate_vae, load_vae

    _check_sheet(args.sheet, args.overwrite)
    vae = load_vae(args.vae).to(_device(args.device))
    result = evaluate_vae(vae, _holdout_config("vae", args), sheet=args.sheet, sheet_rows=args.sheet_rows,
                          progress=_progress(args))  # fmt: skip
    _print_result({"vae": str(args.vae), **result}, args.json)
    return 0


def cmd_eval_clip(args: argparse.Namespace) -> int:
    from .training.components import evaluate_clip, load_clip

    clip, tok = load_clip(args.clip)
    native = clip.config.vision_config.image_size
    if args.size is None:
        args.size = native
    elif args.size != native:
        raise ValueError(f"--size must be this MiniCLIP's input size, {native} px (the default), got {args.size}")
    result = evaluate_clip(clip.to(_device(args.device)), tok, _holdout_config("clip", args))
    _print_result({"clip": str(args.clip), **result}, args.json)
    return 0


def _check_run_folder(out: Path, resume: bool) -> None:
    """Refuse a benchmark run folder before any model is loaded: one holding a run continues only
    with ``resume``; a non-empty folder holding no run is never written to."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a folder")
    if (out / "record.json").exists():
        if not resume:
            raise ValueError(f"out {str(out)!r} already holds a run; pass --resume to continue it")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"out {str(out)!r} is not empty and holds no fgdm run; refusing to write there")


def _resumable_run(out: Path, settings: dict, resume: bool) -> Path:
    """Check (and create) a benchmark run folder; returns its record path. A run continues only
    with ``resume`` and the same settings."""
    _check_run_folder(out, resume)
    rec = out / "record.json"
    try:
        before = (json.loads(rec.read_text()).get("settings") or {}) if rec.exists() else settings
        if not isinstance(before, dict):
            raise ValueError
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"out {str(out)!r} holds an unreadable record.json; remove the folder to start over") from None
    differ = [f"{k}: {before.get(k)!r}, now {settings.get(k)!r}" for k in sorted(before.keys() | settings.keys())
              if before.get(k) != settings.get(k)]  # fmt: skip
    if differ:
        raise ValueError(f"out {str(out)!r} holds a run with other settings ({'; '.join(differ)}); "
                         "--resume needs the same ones")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    return rec


def _recorded_run(args: argparse.Namespace, out: Path, settings: dict, run: Callable[[], dict]) -> dict:
    """Start (or, with --resume, continue) a benchmark run folder, call ``run()`` and record its
    result in ``out/record.json`` with the settings and the command; returns the result."""
    from .runs import write_json

    rec = _resumable_run(out, settings, args.resume)
    command = shlex.join(["fgdm", *args.argv])
    write_json(rec, {"settings": settings, "command": command, "status": "running"})
    res = run()
    write_json(rec, {"settings": settings, "command": command, "status": "done", **res})
    return res


def cmd_eval_benchmark(args: argparse.Namespace) -> int:
    """recall / multigen / visor: generate for a prompt set, judge, score (resumable run folder)."""
    from accelerate import PartialState

    from .eval.prompts import load_prompt_entries
    from .eval.runner import run_prompts, verdict_sheet
    from .models.judge import default_judge_dir, load_judge
    from .models.pipeline import fingerprint
    from .runs import next_run_dir
    from .world.sheet import save_sheet

    kind = args.eval_command
    entries = load_prompt_entries(args.prompts)
    if args.limit:
        entries = entries[: args.limit]
    empty = [e.text for e in entries if not e.objects]
    if empty:
        raise ValueError(f"prompts: {len(empty)} prompt(s) name no known object, e.g. {empty[0]!r}")
    if kind == "visor" and any(e.relation is None or len(e.objects) != 2 for e in entries):
        raise ValueError("prompts: visor needs relation prompts (e.g. prompts/relations_500.json)")
    out = Path(args.out) if args.out else next_run_dir("runs", f"eval-{kind}{'-real' if args.real else ''}")
    _check_run_folder(out, args.resume)
    device = _device(args.device)
    pipe, model = _image_source(args, entries, device)
    judge = load_judge(args.judge, device)
    settings = {"kind": kind, "prompts": str(args.prompts), "n_prompts": len(entries),
                "images_per_prompt": args.images_per_prompt, **model, "seed": args.seed, "size": args.size,
                "judge_fingerprint": fingerprint(args.judge or default_judge_dir())}  # fmt: skip

    def run() -> dict:
        rows = run_prompts(entries, out, pipe=pipe, judge=judge, images_per_prompt=args.images_per_prompt,
                           steps=args.steps, guidance_scale=args.guidance_scale, seed=args.seed, size=args.size,
                           batch_size=args.batch_size, progress=_progress(args))  # fmt: skip
        result = _benchmark_result(kind, rows, len(entries), args.images_per_prompt)
        if PartialState().is_main_process:  # every process holds all rows; one draws
            save_sheet(verdict_sheet(out, rows), out / "sheet.png")
            save_sheet(_benchmark_plot(kind, result, len(entries), args.images_per_prompt), out / "plot.png")
        return {"result": result}

    result = _recorded_run(args, out, settings, run)["result"]
    _print_result(result, args.json)
    return 0


def _image_source(args: argparse.Namespace, entries: list, device: str) -> tuple:
    """What a benchmark scores, and how its record names it: the ``--model`` pipeline (its path,
    fingerprint, steps and guidance), with ``--real`` world renders showing each prompt
    (:class:`~fgdm.eval.runner.WorldRenders`: the benchmark's ceiling), or with ``--images-from RUN``
    the images of an earlier run, read again (:class:`~fgdm.eval.runner.SavedImages`)."""
    if args.images_from is not None:
        from .eval.runner import SavedImages

        if args.model is not None or args.real:
            raise ValueError("--images-from scores the images of an earlier run; drop --model/--real")
        src = SavedImages(args.images_from, entries, images_per_prompt=args.images_per_prompt, seed=args.seed)
        made = {k: src.settings.get(k) for k in ("model", "model_fingerprint", "steps", "guidance_scale")}
        if args.size is not None and args.size != src.image_size:
            raise ValueError(f"--images-from {args.images_from!r} holds {src.image_size}-px images, --size {args.size} asked")
        return src, {**made, "images_from": str(Path(args.images_from).resolve())}
    if not args.real:
        from .pipelines.text2image import Text2ImagePipeline

        pipe = Text2ImagePipeline.from_pretrained(args.model, device=device)
        return pipe, {"model": str(pipe.model.path), "model_fingerprint": pipe.model.fingerprint,
                      "steps": args.steps, "guidance_scale": args.guidance_scale}  # fmt: skip
    from . import __version__
    from .eval.prompts import prompt_entries
    from .eval.runner import WorldRenders
    from .world.render import check_size

    if args.model is not None:
        raise ValueError("--real scores world renders, not a model's images; drop --model (or --real)")
    prompt_entries(entries, need_objects=("--real renders each prompt's objects", ""))
    if args.size is not None:
        check_size(args.size, "--size")
    return WorldRenders(entries), {"model": "sceneworld renders", "model_fingerprint": f"fgdm {__version__}",
                                   "steps": None, "guidance_scale": None}  # fmt: skip


def _benchmark_result(kind: str, rows: list[dict], n_prompts: int, images_per_prompt: int) -> dict:
    import numpy as np

    from .eval.metrics import (
        multigen_scores,
        object_recall,
        presence_by_position,
        recall_summary,
        shuffled_recall,
        visor_scores,
    )

    if kind == "recall":
        result = recall_summary([object_recall(r["objects"], r["present"]) for r in rows])
        result["shuffled_recall"] = shuffled_recall([r["objects"] for r in rows], [r["present"] for r in rows])
    elif kind == "multigen":
        counts = np.zeros((images_per_prompt, n_prompts), dtype=int)
        for r in rows:
            counts[r["k"], r["prompt_index"]] = len(set(r["objects"]) & set(r["present"]))
        result = multigen_scores(counts)
    else:
        result = visor_scores([(set(r["objects"]) <= set(r["present"]), r.get("relation_holds")) for r in rows])
    result["presence_by_position"] = presence_by_position([r["objects"] for r in rows], [r["present"] for r in rows])
    result["seconds_per_image"] = round(float(np.mean([r["seconds"] for r in rows])), 4)
    return result


def _benchmark_plot(kind: str, result: dict, n_prompts: int, images_per_prompt: int):
    """``plot.png`` of a benchmark run: MG2-5 (mean ± std over rounds) for multigen, presence by
    named position otherwise."""
    from .eval.metrics import ordinal
    from .eval.plots import bar_chart

    shape = f"{n_prompts} prompts x {images_per_prompt}"
    if kind == "multigen":
        keys = [k for k in ("MG2", "MG3", "MG4", "MG5") if k in result]
        return bar_chart(keys, [result[k]["mean"] for k in keys], errors=[result[k]["std"] for k in keys], ymax=100,
                         title=f"MultiGen, {shape}: % of images with >= k of the objects (mean ± std over rounds)")
    pos = result["presence_by_position"]
    return bar_chart([ordinal(i + 1) for i in range(len(pos))], pos, ymax=100,
                     title=f"{kind}, {shape}: % of images in which the judge found the n-th named object")


def cmd_eval_compare(args: argparse.Namespace) -> int:
    """Two benchmark runs of the same prompts and seeds, image by image (paired counts, sign test)."""
    from .eval.compare import compare_runs, markdown_table

    result = compare_runs(args.run_a, args.run_b)
    print(json.dumps(result, indent=1) if args.json else markdown_table(result))
    return 0


def cmd_eval_sbpc(args: argparse.Namespace) -> int:
    """The SBPC table (paper Tables 3-4): FG-DM best-of-N vs the base model and image-space SBPC."""
    from .eval.sbpc_bench import markdown_table, plot_recall_and_time, run_sbpc_table, sbpc_sheet
    from .models.judge import default_judge_dir, load_judge
    from .models.pipeline import fingerprint
    from .pipelines.factor_graph import FactorGraphPipeline
    from .runs import next_run_dir
    from .world.prompts import read_prompts

    prompts = read_prompts(args.prompts, "--prompts")[: args.n_prompts]
    out = Path(args.out) if args.out else next_run_dir("runs", "eval-sbpc")
    _check_run_folder(out, args.resume)
    device = _device(args.device)
    graph = FactorGraphPipeline.from_pretrained(args.graph, device=device)
    if "image" not in graph.spec.factors or "seg" not in graph.spec.factors:
        raise ValueError(f"eval sbpc needs a graph with seg and image factors; it has {list(graph.spec.factors)}")
    if args.split_steps is not None and args.split is None:
        raise ValueError("--split-steps is the share of the steps --split draws one object at a time; pass --split W too")
    if args.split is not None and "seg" not in graph.spec.factors["image"].parents:
        raise ValueError(f"--split draws the image factor on seg maps; this graph's image factor reads "
                         f"{list(graph.spec.factors['image'].parents)}")  # fmt: skip
    _check_sizes(graph, cond_size=args.cond_size)
    judge = load_judge(args.judge, device)
    settings = {"prompts": str(args.prompts), "n_prompts": len(prompts), "ns": args.ns, "cond_steps": args.cond_steps,
                "baseline_n": args.baseline_n, "ceiling": not args.no_ceiling, "cond_size": args.cond_size,
                "complete": args.complete, "split": args.split, "split_steps": args.split_steps or 1.0,
                "image_steps": args.steps, "seed": args.seed,
                "final_factors": [f for f in graph.spec.factors if f != "seg"],  # what SBPC samples on its pick
                "graph": str(graph.path), "model_fingerprint": graph.base.fingerprint,
                "judge_fingerprint": fingerprint(args.judge or default_judge_dir())}  # fmt: skip
    clip = None
    if args.clip:
        from .eval.quality import MiniCLIPFeatures

        clip = MiniCLIPFeatures(args.clip, device)
    res = _recorded_run(args, out, settings, lambda: run_sbpc_table(
        graph, judge, prompts, out, ns=args.ns, cond_steps=args.cond_steps, baseline_n=args.baseline_n,
        cond_size=args.cond_size, image_steps=args.steps, seed=args.seed, clip=clip, ceiling=not args.no_ceiling,
        complete=args.complete, split=args.split, split_steps=args.split_steps or 1.0,
        progress=_progress(args)))  # fmt: skip
    plot_recall_and_time(res["rows"]).save(out / "recall_time.png")
    sbpc_sheet(out, res["rows"], prompts, args.sheet_prompts).save(out / "sheet.png")
    table = markdown_table(res["rows"])
    (out / "table.md").write_text(table)
    print(json.dumps(res["rows"], indent=1) if args.json else f"{table}\n(table, plot and images in {out})")
    return 0


def cmd_eval_fgdm(args: argparse.Namespace) -> int:
    """FG-DM's quality table (paper Tables 2 and 5, joint vs ancestral, consistency)."""
    from .eval.fgdm_quality import markdown_table, run_fgdm_quality, sample_sheet
    from .eval.quality import MiniCLIPFeatures
    from .models.judge import default_judge_dir, load_judge
    from .models.miniclip import default_clip_dir
    from .models.pipeline import fingerprint
    from .pipelines.factor_graph import FactorGraphPipeline
    from .runs import next_run_dir
    from .world.prompts import read_prompts

    prompts = read_prompts(args.prompts, "--prompts")[: args.n_prompts]
    out = Path(args.out) if args.out else next_run_dir("runs", "eval-fgdm")
    _check_run_folder(out, args.resume)
    device = _device(args.device)
    graph = FactorGraphPipeline.from_pretrained(args.graph, device=device)
    ablations = [_named_graph(item, "--ablation", "LABEL=GRAPH_DIR", "no-distill=runs/train/graph_nodistill", device)
                 for item in args.ablation or []]  # fmt: skip
    judge, judge_fp = None, None
    if not args.no_judge:
        judge = load_judge(args.judge, device)
        judge_fp = fingerprint(args.judge or default_judge_dir())
    clip = MiniCLIPFeatures(args.clip, device)
    settings = {"prompts": str(args.prompts), "n_prompts": len(prompts), "sets": args.sets, "modes": args.modes,
                "images_per_prompt": args.images_per_prompt, "steps": args.steps, "seed": args.seed,
                "n_real": args.n_real, "reference": args.reference, "graph": str(graph.path),
                "model_fingerprint": graph.base.fingerprint,
                "ablations": {label: str(g.path) for label, g in ablations},
                "judge_fingerprint": judge_fp, "clip": str(args.clip or "shipped"),
                "clip_fingerprint": fingerprint(args.clip or default_clip_dir())}  # fmt: skip
    res = _recorded_run(args, out, settings, lambda: run_fgdm_quality(
        graph, clip, prompts, out, judge=judge, sets=args.sets, modes=args.modes, ablations=ablations,
        images_per_prompt=args.images_per_prompt, steps=args.steps,
        seed=args.seed, n_real=args.n_real, reference=args.reference, progress=_progress(args)))  # fmt: skip
    sample_sheet(out, res["configs"], prompts, n_prompts=args.sheet_prompts).save(out / "sheet.png")
    table = markdown_table(res["rows"])
    (out / "table.md").write_text(table)
    print(json.dumps(res["rows"], indent=1) if args.json else f"{table}\n(table, contact sheet and samples in {out})")
    return 0


def cmd_eval_real_edit(args: argparse.Namespace) -> int:
    """Real-image editing measured over held-out renders (reconstruction, unchanged region, recall)."""
    from .editing.real import use_depth
    from .eval.real_edit_bench import examples_sheet, run_real_edit
    from .models.judge import default_judge_dir, load_judge
    from .models.pipeline import fingerprint
    from .pipelines.factor_graph import FactorGraphPipeline
    from .runs import next_run_dir

    out = Path(args.out) if args.out else next_run_dir("runs", "eval-real-edit")
    _check_run_folder(out, args.resume)
    device = _device(args.device)
    pipe = FactorGraphPipeline.from_pretrained(args.graph, device=device)
    judge = load_judge(args.judge, device)
    depth = use_depth(pipe, args.depth)
    settings = {"n": args.n, "seed": args.seed, "edit": args.edit, "level": args.level, "masked": not args.no_mask,
                "guidance": args.guidance, "steps": args.steps, "depth": depth, "negative": not args.no_negative,
                "graph": str(pipe.path), "model_fingerprint": pipe.base.fingerprint,
                "judge_fingerprint": fingerprint(args.judge or default_judge_dir())}  # fmt: skip
    res = _recorded_run(args, out, settings, lambda: run_real_edit(
        pipe, judge, out, n=args.n, seed=args.seed, edit=args.edit, level=args.level, masked=not args.no_mask, steps=args.steps, guidance=args.guidance,
        depth=depth, negative=not args.no_negative, progress=_progress(args)))  # fmt: skip
    sheet = examples_sheet(out, res["rows"])
    if sheet is not None:
        sheet.save(out / "examples.png")
    print(json.dumps(res["summary"], indent=1) if args.json else
          "\n".join(f"{k:22s} {v}" for k, v in res["summary"].items()) + f"\n(examples and per-image results in {out})")  # fmt: skip
    return 0


def cmd_eval_quality(args: argparse.Namespace) -> int:
    """Fréchet distance, precision/recall, CLIP score, diversity (resumable run folder)."""
    from .eval.prompts import load_prompt_entries
    from .eval.quality import MiniCLIPFeatures, evaluate_quality
    from .models.miniclip import default_clip_dir
    from .models.pipeline import fingerprint
    from .runs import next_run_dir

    entries = load_prompt_entries(args.prompts)[: args.limit or None]
    out = Path(args.out) if args.out else next_run_dir("runs", f"eval-quality{'-real' if args.real else ''}")
    _check_run_folder(out, args.resume)
    device = _device(args.device)
    pipe, model = _image_source(args, entries, device)
    clip = MiniCLIPFeatures(args.clip, device)
    settings = {"kind": "quality", "prompts": str(args.prompts), "n_prompts": len(entries),
                "images_per_prompt": args.images_per_prompt, **model, "seed": args.seed, "size": args.size,
                "n_real": args.n_real, "reference": args.reference,
                "clip_fingerprint": fingerprint(args.clip or default_clip_dir())}  # fmt: skip

    def run() -> dict:
        return {"result": evaluate_quality(pipe, clip, entries, out=out,
                                           images_per_prompt=args.images_per_prompt, steps=args.steps,
                                           guidance_scale=args.guidance_scale, seed=args.seed, size=args.size,
                                           n_real=args.n_real, reference=args.reference, batch_size=args.batch_size,
                                           progress=_progress(args))}  # fmt: skip

    _print_result(_recorded_run(args, out, settings, run)["result"], args.json)
    return 0


def cmd_eval_samples(args: argparse.Namespace) -> int:
    from .eval.samples import sample_models
    from .runs import check_output_dir, next_run_dir, staged_output, write_json
    from .world.prompts import read_prompts
    from .world.sheet import save_sheet

    if (args.prompt is None) == (args.prompts is None):
        raise ValueError("give prompts either with --prompt (repeatable) or with --prompts FILE, not both")
    prompts = args.prompt if args.prompt is not None else read_prompts(args.prompts)
    prompts = prompts[: args.limit or None]
    models = args.model or [None]
    if args.label is not None and len(args.label) != len(models):
        raise ValueError(f"--label: {len(args.label)} given for {len(models)} model(s); give one per --model")
    out = check_output_dir(args.out or next_run_dir("runs", "samples"), marker="record.json", overwrite=args.overwrite)
    device = _device(args.device)
    res = sample_models(models, prompts, labels=args.label, seed=args.seed, n=args.n, steps=args.steps,
                        guidance_scale=args.guidance_scale, size=args.size, device=device,
                        progress=not args.quiet)  # fmt: skip
    with staged_output(out, marker="record.json", overwrite=args.overwrite) as stage:
        (stage / "images").mkdir()
        for m, per_model in enumerate(res.images):
            res.models[m]["files"] = []  # [prompt][k]
            for i, images in enumerate(per_model):
                names = [f"images/m{m}-p{i:03d}-s{args.seed + k}.png" for k in range(len(images))]
                for img, name in zip(images, names, strict=True):
                    img.save(stage / name)
                res.models[m]["files"].append(names)
        save_sheet(res.sheet(prompts, cell=args.cell), stage / "sheet.png")
        write_json(stage / "record.json", {
            "kind": "samples", "prompts": prompts, "models": res.models,
            "parameters": {"seed": args.seed, "n": args.n, "steps": args.steps, "guidance_scale": args.guidance_scale,
                           "size": res.size, "sampler": "ddim"},
            "device": device, "command": shlex.join(["fgdm", *args.argv]), "versions": _versions(),
        })  # fmt: skip
    print(f"wrote {len(models)} x {len(prompts)} x {args.n} samples and their sheet to {out / 'sheet.png'}")
    return 0


def cmd_eval_denoise(args: argparse.Namespace) -> int:
    from .eval.denoise import denoise_error

    result = denoise_error(args.model, n=args.n, seed=args.seed, size=args.size, timesteps=tuple(args.timesteps),
                           batch=args.batch, noise_seed=args.noise_seed, device=_device(args.device),
                           progress=_progress(args))  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['model']} ({result['fingerprint']}): {result['n']} held-out renders (seed {result['seed']})")
    print("| t | right caption | empty caption | wrong caption |\n|---:|---:|---:|---:|")
    for j, t in enumerate(result["timesteps"]):
        print(f"| {t} | " + " | ".join(f"{result['mse'][k][j]:.5f}" for k in ("caption", "empty", "wrong")) + " |")
    mean, gain = result["mean_mse"], result["caption_gain"]
    print(f"| mean | {mean['caption']:.5f} | {mean['empty']:.5f} | {mean['wrong']:.5f} |")
    print(f"caption gain: {100 * gain['vs_empty']:.2f}% vs no caption, {100 * gain['vs_wrong']:.2f}% vs a wrong one")
    return 0


def cmd_eval_make_prompts(args: argparse.Namespace) -> int:
    from .eval.prompts import RECIPES, to_multigen_json

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"out {str(out)!r} exists; pass --overwrite to replace it")
    rows = to_multigen_json(RECIPES[args.recipe](args.n, args.seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {len(rows)} {args.recipe} prompts (seed {args.seed}) to {out}")
    return 0


def cmd_eval_palette_decode(args: argparse.Namespace) -> int:
    from .eval.palette_decode import evaluate_palette_decode, markdown_table

    result = evaluate_palette_decode(n=args.n, size=args.size, seed=args.seed, min_area=args.min_area,
                                     progress=_progress(args))  # fmt: skip
    print(json.dumps(result, indent=1) if args.json else markdown_table(result))
    return 0


# ----------------------------------------------------------------------------- parser


def _world_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of world settings (see configs/world.yaml)")
    p.add_argument("--min-objects", type=_int_at_least(1), help="fewest objects per scene")
    p.add_argument("--max-objects", type=_int_at_least(1), help="most objects per scene (K; default 6)")
    p.add_argument(
        "--categories",
        type=_arg_type(_categories, "category list"),
        help="comma-separated thing categories to draw from (default: all 80)",
    )
    p.add_argument(
        "--scene-kinds", type=_arg_type(_csv, "list"), help="comma-separated: field,street,beach,lake,snow,room"
    )
    p.add_argument(
        "--styles", type=_arg_type(_csv, "list"), help="comma-separated: photo,night,grayscale,pencil sketch,pixel art"
    )


def _reference_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", choices=("prompts", "world"), default="prompts",
                   help="the real renders distances are taken to: of the same prompts, showing what each names "
                   "(default), or of the world at large")  # fmt: skip


def _real_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", action="store_true",
                   help="score SceneWorld renders that show exactly each prompt's objects (and relation) "
                   "instead of generated images: the benchmark's ceiling")  # fmt: skip
    p.add_argument("--images-from", metavar="RUN",
                   help="score the images of an earlier run of the same prompts and seed (e.g. with another "
                   "judge or MiniCLIP) instead of drawing them again")  # fmt: skip


def _holdout_args(p: argparse.ArgumentParser, n: int, what: str) -> None:
    """--n/--seed/--size of the held-out renders a trained component is measured on (the trainers'
    defaults), and --device/--json."""
    p.add_argument("--n", type=_int_at_least(1), default=n, help=what)
    p.add_argument("--seed", type=_int_at_least(0), default=10_000, help="held-out world seed")
    p.add_argument("--size", type=_arg_type(_size, "size"), default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="fgdm", description="Prompt-compliant, controllable text-to-image diffusion.")
    ap.add_argument("--version", action="version", version=f"fgdm {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = ap.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help="SceneWorld: the labelled world every model trains and is judged in")
    wsub = world.add_subparsers(dest="world_command", required=True)

    p = wsub.add_parser("render", help="render scenes with every condition map, captions and a contact sheet")
    p.add_argument("--n", type=_int_at_least(1), default=16, help="number of scenes (default 16)")
    p.add_argument("--size", type=_arg_type(_size, "size"), default=128, help="side in pixels, multiple of 8 in 64-512")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="base seed (scene i uses (seed, i))")
    p.add_argument("--out", help="output folder (default: a new runs/world-NNN)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier render in --out")
    p.add_argument("--workers", type=_int_at_least(1), default=1, help="render processes")
    p.add_argument("--sheet-rows", type=_int_at_least(0), default=16, help="rows of sheet.png (0 = none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _world_options(p)
    p.set_defaults(func=cmd_world_render)

    p = wsub.add_parser("categories", help="list the vocabulary: ids, names, forms, palette colours")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_world_categories)

    p = wsub.add_parser("parse", help="which categories a prompt names (and which words are unknown)")
    p.add_argument("prompt", nargs="*", help="prompt text(s)")
    p.add_argument("--prompts", help="file: one prompt per line, or the MultiGen JSON list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_world_parse)

    p = wsub.add_parser("stats", help="statistics of a rendered folder (objects, captions, kinds, styles)")
    p.add_argument("folder", help="a folder written by `fgdm world render`")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_world_stats)
    p = wsub.add_parser("sheet", help="a contact sheet of export folders side by side (sample i of each per row)")
    p.add_argument("folders", nargs="+", help="folders written by `fgdm world render` or `fgdm generate --export-dataset`")
    p.add_argument("--out", required=True, help="the sheet (.png)")
    p.add_argument("--columns", type=_arg_type(_csv, "columns"), default=["images", "seg"],
                   help="sub-folders shown per folder (default images,seg)")
    p.add_argument("--rows", type=_int_at_least(1), default=6, help="samples (default 6)")
    p.add_argument("--cell", type=_int_at_least(16), default=128, help="tile side in pixels (default 128)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_world_sheet)

    p = wsub.add_parser("decode-seg", help="decode a palette segmentation image to classes")
    p.add_argument("image")
    p.add_argument(
        "--tolerance",
        type=_arg_type(_non_negative, "number"),
        default=30.0,
        help="max RGB distance to a palette colour",
    )
    p.add_argument(
        "--min-area",
        type=_arg_type(_non_negative, "number"),
        default=0.003,
        help="drop classes below this area (fraction if < 1, else pixels)",
    )
    p.add_argument("--out", help="write the cleaned palette map here")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_world_decode)

    p = sub.add_parser("generate", help="text-to-image with the base model (MiniSD or --model DIR), or FG-DM")
    p.add_argument("prompt", nargs="?")
    p.add_argument("--prompts", help="with --export-dataset: a prompt file (one per line, or MultiGen JSON)")
    p.add_argument("--export-dataset", metavar="DIR",
                   help="FG-DM: write a labelled dataset (image, seg ids, depth, caption) for every prompt")
    p.add_argument("--limit", type=_int_at_least(1), default=None, help="with --prompts: the first N prompts")
    p.add_argument("--model", help="a diffusers Stable Diffusion directory (default: the shipped MiniSD)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="image i uses seed + i")
    p.add_argument("-o", "--out", help="output folder (default: a new runs/generate-NNN)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--resume", action="store_true",
                   help="with --export-dataset: continue an interrupted export (same prompts and settings)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULT_BATCH,
                   help="images per call (default 16; with --export-dataset whole prompts at a time). Speed "
                   "and memory only: image i keeps seed + i, so --resume may use another "
                   "(not with --eta > 0)")  # fmt: skip
    p.add_argument("--n", type=_int_at_least(1), default=1, help="images")
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="DDIM steps (default 25, FG-DM: the graph's)")
    p.add_argument("--guidance-scale", type=_arg_type(_non_negative, "number"), default=None,
                   help="CFG scale (default 7.5, FG-DM: the graph's)")
    p.add_argument("--size", type=_int_at_least(8), default=None, help="image side (default: the model's)")
    p.add_argument("--factors", type=_arg_type(_csv, "list"), default=None,
                   help="sample through the FG-DM graph: which factors, e.g. seg,image or depth,image or seg")
    p.add_argument("--graph", help="an FG-DM graph folder (default: the shipped graph)")
    p.add_argument("--mode", choices=("joint", "ancestral"), default=None,
                   help="FG-DM: joint (every factor steps together; default) or ancestral (conditions first)")
    p.add_argument("--cond-size", type=_int_at_least(8), default=None,
                   help="FG-DM: side of the condition maps (default: each factor's; with --sbpc: of the seg "
                        "candidates, default 64)")
    p.add_argument("--cond-steps", type=_int_at_least(1), default=None,
                   help="FG-DM: DDIM steps of the condition factors (default: each factor's; with --sbpc: of the "
                        "seg candidates, default 10; the final pass's other factors keep their own)")
    p.add_argument("--sbpc", type=_int_at_least(1), default=None, metavar="N",
                   help="sampling-based prompt compliance: best of N seg maps by object recall, then the image "
                        "(with --export-dataset: a search per sample, its labels the chosen map)")
    p.add_argument("--best-of", type=_int_at_least(1), default=None, metavar="N",
                   help="image-space search: N base-model images, the one in which the judge finds most of the "
                   "prompt's objects (on a CPU, --best-of 2 finds more objects than --sbpc 10, in less time: docs/results.md)")
    p.add_argument("--judge", help="with --best-of: the judge folder (default: the shipped judge)")
    p.add_argument("--early-stop", type=_arg_type(_unit_interval, "recall"), default=None,
                   help="SBPC, --best-of: stop drawing candidates once one reaches this recall")
    p.add_argument("--keep-candidates", action="store_true",
                   help="SBPC, --best-of: save every candidate (map or image) as a contact sheet")
    p.add_argument("--complete", action="store_true",
                   help="SBPC: relabel objects the prompt does not name as the chosen map's missing ones before "
                   "the image (not in the paper; the record lists each change)")  # fmt: skip
    p.add_argument("--split-objects", type=_arg_type(_weight01, "weight"), default=None, metavar="W",
                   help="SBPC: draw the image one object at a time on the chosen map, in one trajectory: a row per "
                   "object, alone in its map and caption, blended by the map's regions, the whole prompt keeping "
                   "weight W (0 is what docs/results.md measured best) inside them; the image only, one image-factor "
                   "pass per object (not in the paper)")  # fmt: skip
    p.add_argument("--split-steps", type=_arg_type(_unit_interval, "share"), default=None, metavar="F",
                   help="SBPC with --split-objects: draw only the first share F of the image's steps one object at a "
                   "time, the rest with the whole prompt alone (cheaper: 0.6 kept most of the gain in "
                   "docs/results.md; default 1, every step)")  # fmt: skip
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--eta", type=_arg_type(_eta, "number"), default=None,
                   help="DDIM eta in [0, 1] (0: deterministic, 1: DDPM's noise; default 0, with --factors "
                   "each factor's eta in graph.yaml)")  # fmt: skip
    p.add_argument("--save-attention", action="store_true", help="also write per-token cross-attention heat maps")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("edit", help="edit a FG-DM sample's condition maps object by object and re-render it")
    p.add_argument("run", help="a run folder written by `fgdm generate --factors ...` or `--sbpc`")
    p.add_argument("--sample", type=_int_at_least(0), default=0, help="which sample of the run")
    p.add_argument("-o", "--out", help="output folder (default: a new runs/edit-NNN)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--graph", help="re-render with this graph (default: the run's)")
    p.add_argument("--edits-from", help="replay the edits of an earlier edit run's record.json first")
    p.add_argument("--keep-rest", action="store_true",
                   help="regenerate only where the maps changed: the rest of the image is the run's own, DDIM-inverted "
                        "and followed (without it the whole image is re-rendered with the same seed)")  # fmt: skip
    p.add_argument("--keep-prompt", action="store_true",
                   help="re-render with the run's prompt as it is; by default a class the edits remove from the map "
                        "leaves the prompt and a class they add replaces it or joins it")  # fmt: skip
    for flag, meta, text in (
        ("--move", "OBJ:dx,dy", "move an object (OBJ: dog, dog#2 (second largest) or an instance id)"),
        ("--resize", "OBJ:SCALE", "scale an object about its centre"),
        ("--flip", "OBJ", "mirror an object left-right"),
        ("--delete", "OBJ", "remove an object (filled with the surrounding background)"),
        ("--duplicate", "OBJ:dx,dy", "copy an object to an offset"),
        ("--change-class", "OBJ:CLASS", "relabel an object"),
        ("--text", "TEXT", "write text onto the sketch map"),
        ("--paste", "RUN:OBJ:dx,dy", "paste an object from another FG-DM run or a rendered or generated export "
                                     "(`fgdm world render`, `--export-dataset`; RUN#K: its sample K, default 0), "
                                     "resized to this sample's maps"),
    ):
        p.add_argument(flag, metavar=meta, action=_EditAction, help=text + " (repeatable; applied in order)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_edit, edits=None)

    p = sub.add_parser("edit-real", help="edit a real image: extract its map with the judge, invert, edit, re-render")
    p.add_argument("image", help="an RGB image file")
    p.add_argument("--prompt", required=True, help="a prompt describing the image (it must name the classes to edit)")
    p.add_argument("--replace", action="append", metavar="OLD:NEW", help="text edit: turn one class into another")
    p.add_argument("--remove", action="append", metavar="CLASS", help="text edit: remove a class")
    for flag, meta in (("--move", "OBJ:dx,dy"), ("--resize", "OBJ:SCALE"), ("--flip", "OBJ"), ("--delete", "OBJ"),
                       ("--duplicate", "OBJ:dx,dy"), ("--change-class", "OBJ:CLASS")):  # fmt: skip
        p.add_argument(flag, metavar=meta, action=_EditAction, help="object-level edit of the extracted map")
    p.add_argument("--level", choices=("pixel", "semantic"), default="pixel",
                   help="pixel: re-render from the image's own inverted noise (keeps the unchanged background); "
                        "semantic: from fresh noise")  # fmt: skip
    _region_args(p)
    p.add_argument("--graph", help="FG-DM graph folder (default: the shipped graph)")
    p.add_argument("--judge", help="judge folder (default: the shipped judge)")
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="DDIM steps of inversion and sampling")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--measure", action="store_true",
                   help="also measure inversion PSNR, unchanged-region PSNR and the edited region's recall")
    p.add_argument("-o", "--out", help="output folder (default: a new runs/edit-real-NNN)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_edit_real, edits=None)

    tr = sub.add_parser("train", help="train MiniSD's components, the judge and FG-DM factors (accelerate: CPU, one GPU or many)")
    tsub = tr.add_subparsers(dest="component", required=True)
    helps = {"factor": "train an FG-DM condition factor (adapter on the frozen base)",
             "image-factor": "train the FG-DM image factor (ControlNet or adapter on the frozen base)"}  # fmt: skip
    for comp in ("tokenizer", "clip", "vae", "unet", "judge", "factor", "image-factor"):
        p = tsub.add_parser(comp, help=helps.get(comp, f"train the {comp}"))
        p.add_argument("--config", required=True, help="YAML run configuration (see configs/)")
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
        p.add_argument("--steps", type=_int_at_least(1), help="override the config's total steps")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override any config value by dotted key, e.g. --set data.n_scenes=64 (repeatable)")
        p.add_argument("--output-dir", help="override the config's output_dir")
        p.add_argument("--max-minutes", type=_arg_type(_positive_float, "max-minutes"),
                       help="wall-clock budget from the command's start: stop cleanly with a checkpoint once "
                            "spent (--resume goes on); e.g. 8.5 on a machine that kills commands at 10 minutes")
        p.add_argument("--quiet", action="store_true")
        p.set_defaults(func=cmd_train)
    p = tsub.add_parser("assemble", help="put trained components together as a diffusers SD pipeline")
    for name in ("tokenizer", "text-encoder", "vae"):
        p.add_argument(f"--{name}", required=True, help=f"trained {name} folder")
    p.add_argument("--unet", required=True, help="trained unet folder (a run's final/), or a training checkpoint "
                   "(e.g. checkpoints/unet: its EMA weights) to look at a UNet part-way through training")  # fmt: skip
    p.add_argument("--unet-config", type=Path, help="the architecture of a checkpoint --unet: its UNet training "
                   "config (default: the run's config.json beside its checkpoints/ folder)")  # fmt: skip
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16)")
    p.set_defaults(func=cmd_train_assemble)
    p = tsub.add_parser("assemble-clip", help="MiniCLIP for evaluation, without its text tower (that is MiniSD's "
                        "text encoder): fp16 image tower and projections")  # fmt: skip
    p.add_argument("--clip", required=True, help="a trained CLIPModel folder (`fgdm train clip`'s final/)")
    p.add_argument("--with-text", action="store_true", help="keep its text tower and tokenizer too (fp16, about "
                   "twice the size): for a MiniSD whose text encoder trained on (extra.train_text_encoder)")  # fmt: skip
    p.add_argument("--text-encoder", help="where the text tower of an evaluation MiniCLIP --clip is (a pipeline "
                   "or its text_encoder/ folder; default: the shipped MiniSD's)")  # fmt: skip
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_train_assemble_clip)
    p = tsub.add_parser("assemble-graph", help="copy a trained FG-DM graph as fp16 safetensors (e.g. for shipping)")
    p.add_argument("--graph", required=True, help="a trained graph folder (extra.graph of the factor configs)")
    p.add_argument("--factors", type=_arg_type(_csv, "factors"),
                   help="only these factors, e.g. seg,depth,sketch,image (each one's parents included)")
    p.add_argument("--drop-parents", action="store_true",
                   help="with --factors: a kept factor loses the parents not kept, and runs exactly as it did with "
                        "them null (e.g. --factors seg,depth,image of an image factor that also reads sketch, normal)")
    p.add_argument("--take", action="append", metavar="FACTOR=GRAPH",
                   help="use FACTOR (module, kind and sampling settings) from another trained graph on the same "
                        "base, e.g. seg=runs/train/graph_scratch_cpu; it must have the same parents (repeatable)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16)")
    p.set_defaults(func=cmd_train_assemble_graph)

    ev = sub.add_parser("eval", help="metrics and benchmark runners")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    p = esub.add_parser("judge", help="the judge's presence F1, mIoU and depth error on held-out renders")
    p.add_argument("--judge", help="a judge folder (default: the shipped judge)")
    p.add_argument("--n", type=_int_at_least(1), default=500)
    p.add_argument("--seed", type=_int_at_least(0), default=20_000, help="held-out world seed")
    p.add_argument("--size", type=_arg_type(_size, "size"), default=128)
    p.add_argument("--per-class", action="store_true", help="include per-class presence precision/recall")
    p.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                   help="average the judge's view of each image and of its mirror image (default: the judge's own flip_average)")
    p.add_argument("--tta-sizes", type=_arg_type(_tta_sizes, "tta-sizes"),
                   help="image sides the judge reads and averages, e.g. 112,128,160, or none (default: the judge's own)")
    p.add_argument("--sheet", type=Path, help="write a contact sheet (.png) of the renders with the most presence errors")
    p.add_argument("--sheet-rows", type=_int_at_least(1), default=12, help="rows of --sheet (default 12)")
    p.add_argument("--per-class-plot", type=Path,
                   help="write a chart (.png) of every class's presence precision and recall, worst first")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --sheet or --per-class-plot")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval_judge)
    p = esub.add_parser("vae", help="a MiniVAE's held-out reconstruction PSNR per modality and seg palette accuracy")
    p.add_argument("--vae", required=True, help="a VAE folder (fgdm train vae's final/) or an SD pipeline folder")
    p.add_argument("--sheet", type=Path, help="write a contact sheet (.png): each modality beside its reconstruction")
    p.add_argument("--sheet-rows", type=_int_at_least(1), default=6, help="scenes in --sheet (default 6)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --sheet")
    _holdout_args(p, 200, "held-out scenes")
    p.set_defaults(func=cmd_eval_vae)
    p = esub.add_parser("clip", help="a MiniCLIP's zero-shot accuracy over the 80 categories on held-out single-object renders")
    p.add_argument("--clip", required=True, help="a MiniCLIP folder (fgdm train clip's final/, with its tokenizer)")
    _holdout_args(p, 1000, "held-out renders")
    p.set_defaults(func=cmd_eval_clip, size=None)  # the MiniCLIP's input size
    for kind, text in (("recall", "object recall of generated images against their prompts"),
                       ("multigen", "MultiGen MG2-5 (mean and std over rounds)"),
                       ("visor", "VISOR object accuracy and relation accuracy on relation prompts")):  # fmt: skip
        p = esub.add_parser(kind, help=text)
        p.add_argument("--prompts", required=True, help="text file (one per line) or MultiGen JSON list")
        p.add_argument("--model", help="diffusers SD directory (default: the shipped MiniSD)")
        _real_arg(p)
        p.add_argument("--judge", help="judge folder (default: the shipped judge)")
        p.add_argument("--images-per-prompt", type=_int_at_least(1, 1000), default=10 if kind == "multigen" else 1,
                       help="images per prompt (image k of prompt p has seed SEED + 1000 p + k, so at most 1000)")
        p.add_argument("--limit", type=_int_at_least(1), help="only the first P prompts")
        p.add_argument("--steps", type=_int_at_least(1), default=25)
        p.add_argument("--guidance-scale", type=_arg_type(_non_negative, "number"), default=7.5)
        p.add_argument("--seed", type=_int_at_least(0), default=0)
        p.add_argument("--size", type=_int_at_least(8), default=None)
        _batch_size_arg(p)
        _runner_args(p, kind)
        p.set_defaults(func=cmd_eval_benchmark)
    p = esub.add_parser("compare", help="two recall/multigen/visor runs of the same prompts and seeds, image by image: "
                        "each measure in both, images better / worse, sign test")  # fmt: skip
    p.add_argument("run_a", metavar="A", help="a finished (or partial) benchmark run folder: the reference")
    p.add_argument("run_b", metavar="B", help="another run of the same prompts and seeds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_compare)
    p = esub.add_parser("sbpc", help="SBPC table: FG-DM best-of-N vs the base model and image-space best-of-N")
    p.add_argument("--prompts", required=True, help="dense prompts (e.g. prompts/dense_6to8_200.json)")
    p.add_argument("--n-prompts", type=_int_at_least(1), default=50, help="the first P prompts")
    p.add_argument("--graph", help="FG-DM graph folder (default: the shipped graph)")
    p.add_argument("--judge", help="judge folder (default: the shipped judge)")
    p.add_argument("--clip", help="a CLIPModel folder for CLIP score (optional)")
    p.add_argument("--ns", type=_arg_type(_positive_ints, "list"), default=[1, 5, 10],
                   help="candidate counts N (default 1,5,10)")
    p.add_argument("--cond-steps", type=_arg_type(_positive_ints, "list"),
                   default=[10, 20], help="condition DDIM steps t (default 10,20)")
    p.add_argument("--baseline-n", type=_arg_type(_positive_ints, "list"), default=[10],
                   help="N of the image-space SBPC baseline: one or a list, e.g. 2,5,10 for recall against time "
                   "(default 10; base N=1 always runs)")
    p.add_argument("--no-ceiling", action="store_true",
                   help="leave out the two ceiling rows: world renders showing each prompt (what a perfect "
                   "generator scores) and the graph given their real seg maps")
    p.add_argument("--complete", action="store_true",
                   help="also run each FG-DM configuration with map completion (fgdm generate --sbpc --complete)")
    p.add_argument("--split", type=_arg_type(_weight01, "weight"), default=None, metavar="W",
                   help="also run each FG-DM configuration, and the map ceiling, with the image drawn one object at "
                   "a time (fgdm generate --sbpc --split-objects W); with --complete also the completed maps")  # fmt: skip
    p.add_argument("--split-steps", type=_arg_type(_unit_interval, "share"), default=None, metavar="F",
                   help="with --split: split only the first share F of the image's steps (fgdm generate --split-steps); "
                   "the rows are named '+ split (first F)'")  # fmt: skip
    p.add_argument("--sheet-prompts", type=_int_at_least(1), default=6,
                   help="prompts in sheet.png (each configuration's final image and its recall)")
    p.add_argument("--cond-size", type=_int_at_least(8), default=64,
                   help="side of the candidate seg maps, and of the real maps the map-ceiling row gives (default 64)")
    p.add_argument("--steps", type=_int_at_least(1), default=25, help="DDIM steps of every full-size image")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    _runner_args(p, "sbpc")
    p.set_defaults(func=cmd_eval_sbpc)
    p = esub.add_parser("fgdm", help="FG-DM quality table: conditions and images vs the base model, joint vs "
                        "ancestral, distillation ablation, image-map consistency")  # fmt: skip
    p.add_argument("--prompts", required=True)
    p.add_argument("--n-prompts", type=_int_at_least(1), default=50, help="the first P prompts")
    p.add_argument("--clip", help="MiniCLIP for the feature space: a CLIPModel folder or an evaluation MiniCLIP "
                   "(default: the shipped one)")
    p.add_argument("--graph", help="FG-DM graph folder (default: the shipped graph)")
    p.add_argument("--sets", type=_arg_type(lambda t: [_csv(g) for g in t.split(";") if g.strip()], "sets"),
                   help="factor sets, ';'-separated, e.g. 'seg,image;depth,image;normal' "
                        "(default: each condition with the image factor where it is the image's parent)")
    p.add_argument("--modes", type=_arg_type(_csv, "modes"), default=["joint", "ancestral"],
                   help="joint and/or ancestral (default both)")
    p.add_argument("--ablation", action="append", metavar="LABEL=GRAPH",
                   help="extra rows with that graph's own factors swapped in, e.g. no-distill=runs/train/graph_nodistill "
                        "or adapter-image=runs/train/graph_image_adapter (repeatable)")
    p.add_argument("--judge", help="judge folder for the consistency columns (default: the shipped judge)")
    p.add_argument("--no-judge", action="store_true", help="skip the consistency columns")
    p.add_argument("--images-per-prompt", type=_int_at_least(1, 1000), default=4)
    p.add_argument("--steps", type=_int_at_least(1), default=25, help="DDIM steps of every factor and the base")
    p.add_argument("--n-real", type=_int_at_least(4), default=500, help="real renders to compare with")
    _reference_arg(p)
    p.add_argument("--sheet-prompts", type=_int_at_least(1), default=4, help="prompts in the contact sheet")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    _runner_args(p, "fgdm")
    p.set_defaults(func=cmd_eval_fgdm)
    p = esub.add_parser("real-edit", help="real-image editing over held-out renders: reconstruction and unchanged-region "
                        "PSNR, the judge's recall of the new class")  # fmt: skip
    p.add_argument("--n", type=_int_at_least(1), default=50, help="held-out renders to edit")
    p.add_argument("--seed", type=_int_at_least(0), default=50_000, help="world seed of the held-out renders")
    p.add_argument("--edit", choices=["text", "map", "remove", "delete"], default="text",
                   help="text: prompt swap on the inverted seg trajectory; map: relabel the object in the extracted map; "
                        "remove: drop its class from the prompt (text); delete: delete it from the extracted map")  # fmt: skip
    p.add_argument("--level", choices=["pixel", "semantic"], default="pixel")
    _region_args(p)
    p.add_argument("--steps", type=_int_at_least(1), help="DDIM steps of inversion and sampling (default: the graph's)")
    p.add_argument("--graph", help="FG-DM graph folder (default: the shipped graph)")
    p.add_argument("--judge", help="judge folder (default: the shipped judge)")
    _runner_args(p, "real-edit")
    p.set_defaults(func=cmd_eval_real_edit)
    p = esub.add_parser("quality", help="Fréchet distance, precision/recall, CLIP score, diversity (MiniCLIP features)")
    p.add_argument("--prompts", required=True)
    p.add_argument("--clip", help="MiniCLIP: a CLIPModel folder (from `fgdm train clip`) or an evaluation "
                   "MiniCLIP (`fgdm train assemble-clip`; default: the shipped one)")
    p.add_argument("--model", help="diffusers SD directory (default: the shipped MiniSD)")
    _real_arg(p)
    p.add_argument("--images-per-prompt", type=_int_at_least(1, 1000), default=4)
    p.add_argument("--limit", type=_int_at_least(1))
    p.add_argument("--n-real", type=_int_at_least(4), default=500, help="real renders to compare with")
    _reference_arg(p)
    p.add_argument("--steps", type=_int_at_least(1), default=25)
    p.add_argument("--guidance-scale", type=_arg_type(_non_negative, "number"), default=7.5)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--size", type=_int_at_least(8), default=None)
    _batch_size_arg(p)
    _runner_args(p, "quality")
    p.set_defaults(func=cmd_eval_quality)
    p = esub.add_parser("samples", help="a contact sheet of the same prompts and seeds through several models "
                        "(e.g. a UNet at several points of its training)")  # fmt: skip
    p.add_argument("--model", action="append", help="diffusers SD directory, repeatable: one column group each "
                   "(default: the shipped MiniSD)")  # fmt: skip
    p.add_argument("--label", action="append", help="a column title per --model (default: its folder name)")
    p.add_argument("--prompt", action="append", help="a prompt, repeatable: one row each")
    p.add_argument("--prompts", help="a prompt file (one per line, or MultiGen JSON) instead of --prompt")
    p.add_argument("--limit", type=_int_at_least(1), help="the first N prompts")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="image k of a prompt uses seed + k")
    p.add_argument("--n", type=_int_at_least(1), default=2, help="images per prompt and model (default 2)")
    p.add_argument("--steps", type=_int_at_least(1), default=25)
    p.add_argument("--guidance-scale", type=_arg_type(_non_negative, "number"), default=7.5)
    p.add_argument("--size", type=_int_at_least(8), default=None, help="image side (default: the first model's)")
    p.add_argument("--cell", type=_int_at_least(32), default=128, help="tile side in the sheet (default 128)")
    p.add_argument("-o", "--out", help="output folder (default: a new runs/samples-NNN)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval_samples)
    p = esub.add_parser("denoise", help="held-out denoising error with the right, the empty and a wrong caption: "
                        "a judge-free measure of a UNet's progress and of how much it reads its prompt")  # fmt: skip
    p.add_argument("--model", help="diffusers SD directory (default: the shipped MiniSD)")
    p.add_argument("--n", type=_int_at_least(2), default=256, help="held-out renders (default 256)")
    p.add_argument("--seed", type=_int_at_least(0), default=10_000, help="their world seed (default 10000)")
    p.add_argument("--timesteps", type=_arg_type(lambda t: [int(x) for x in _csv(t)], "list"),
                   default=[50, 200, 400, 600, 800, 950], help="noise levels (default 50,200,400,600,800,950)")  # fmt: skip
    p.add_argument("--noise-seed", type=_int_at_least(0), default=0)
    p.add_argument("--size", type=_int_at_least(8), default=None, help="image side (default: the model's)")
    p.add_argument("--batch", type=_int_at_least(1), default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval_denoise)
    p = esub.add_parser("make-prompts", help="generate a versioned prompt set (MultiGen JSON format)")
    p.add_argument("--recipe", choices=["multigen", "relations", "dense", "single", "pairs", "captions"], required=True)
    p.add_argument("--n", type=_int_at_least(1), required=True)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_eval_make_prompts)
    p = esub.add_parser(
        "palette-decode", help="segmentation decoding under blur, resizing and noise (vs a naive decoder)"
    )
    p.add_argument("--n", type=_int_at_least(1), default=100, help="maps to test")
    p.add_argument("--size", type=_arg_type(_size, "size"), default=128)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--min-area", type=_arg_type(_non_negative, "number"), default=0.003)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval_palette_decode)

    bench = sub.add_parser("bench", help="benchmarks (speed ratios measured side by side)")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    p = bsub.add_parser("world", help="SceneWorld samples/s per core, and with DataLoader workers")
    p.add_argument("--size", type=_arg_type(_size, "size"), default=128)
    p.add_argument("--n", type=_int_at_least(1), default=200, help="samples per measurement")
    p.add_argument("--workers", type=_int_at_least(0), default=None, help="DataLoader workers (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_world)
    p = bsub.add_parser("generate", help="seconds per image, and the cost of attention capture, side by side")
    p.add_argument("--model", help="a diffusers SD directory (default: the shipped MiniSD)")
    p.add_argument("--size", type=_int_at_least(8), default=None)
    p.add_argument("--steps", type=_int_at_least(1), default=25)
    p.add_argument("--n", type=_int_at_least(1), default=3, help="images per measurement")
    p.add_argument("--batch", type=_arg_type(_positive_ints, "list"), default=[],
                   help="also time batches of these sizes, per image (e.g. 4,16: what the eval runners' --batch-size buys)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_generate)
    p = bsub.add_parser("train", help="seconds per UNet or judge training step, the variants side by side")
    p.add_argument("--config", default="configs/unet.yaml", help="a UNet or judge training config (its model and batch)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override config values (repeatable)")
    p.add_argument("--batch", type=_int_at_least(1), help="override the config's batch size")
    p.add_argument("--steps", type=_int_at_least(1), default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=_int_at_least(0), default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--compile", action="store_true", help="also time bf16 with torch.compile")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_train)
    p = bsub.add_parser("encode", help="ms per scene of VAE pre-encoding, fp32 vs bf16 autocast, and the bf16 error")
    p.add_argument("--vae", help="a MiniVAE folder or an SD pipeline directory (default: the shipped MiniSD)")
    p.add_argument("--size", type=_arg_type(_size, "size"), default=128)
    p.add_argument("--batch", type=_int_at_least(1), default=32)
    p.add_argument("--n", type=_int_at_least(1), default=3, help="timed batches per variant")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_encode)
    p = bsub.add_parser("factors", help="FG-DM costs: distillation per training step, joint vs ancestral, factor sizes")
    p.add_argument("--model", help="a diffusers SD directory (default: the shipped MiniSD)")
    p.add_argument("--batch", type=_int_at_least(1), default=16, help="training batch")
    p.add_argument("--distill-batch", type=_int_at_least(1), default=8, help="sub-batch for the distillation loss")
    p.add_argument("--distill-every", type=_int_at_least(1), default=10, help="training steps per distillation step")
    p.add_argument("--steps", type=_int_at_least(1), default=25, help="DDIM steps per factor")
    p.add_argument("--n", type=_int_at_least(1), default=3, help="repetitions per measurement")
    p.add_argument("--sample-batch", type=_int_at_least(1), default=16,
                   help="prompts sampled in one call for the batched per-sample time (default 16)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_factors)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # the HF libraries' own bars ("Loading weights"), read when they are first imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return args.func(args)
    except ValueError as e:
        print(f"fgdm: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141
    except OSError as e:  # the environment, not the arguments: disk full, permission denied, ...
        print(f"fgdm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fgdm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

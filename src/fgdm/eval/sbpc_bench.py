"""``fgdm eval sbpc``: the analogue of FG-DM's Tables 3 and 4, every configuration in one run.

Configurations, per prompt, interleaved (so that they share the machine's state):

- ``base N=1``: the base model, one image;
- ``base N=K + judge``: image-space SBPC — K full-size base images, each segmented by the judge,
  the best kept (the paper's "SD N=10");
- ``FG-DM t=T N=n``: SBPC with the graph — n seg maps at ``cond_size`` with T steps, the best by
  object recall, then the graph's other factors once (the image, and depth etc. where the graph has
  them, sampled jointly as ``fgdm generate --sbpc`` does);
- ``FG-DM t=T N=n + complete`` (with ``complete``): the same search and seeds, the chosen map's
  missing objects put in place of objects the prompt does not name before the final pass
  (:func:`~fgdm.compliance.sbpc.complete_map`); its row also gives the completed map's recall;
- ``FG-DM t=T N=n + split`` (with ``split``, the whole prompt's weight W): the same search and seeds,
  the final image drawn one object at a time (:func:`~fgdm.pipelines.split.split_render`), and
  ``FG-DM on real maps (map ceiling) + split`` the same on the real map; with ``complete`` too,
  ``FG-DM t=T N=n + complete + split``: the completed map drawn one object at a time; with
  ``split_steps`` F < 1 only the first share F of the image's steps is split, and these rows are
  named ``+ split (first F)``;
- ``real renders (ceiling)``: a SceneWorld render showing exactly the prompt's objects
  (:class:`~fgdm.eval.runner.WorldRenders`), what a perfect generator would get from the judge;
- ``FG-DM on real maps (map ceiling)``: that render's seg map, at ``cond_size``, given to the graph's
  other factors in place of a searched one: what SBPC's final pass makes of a perfect map, so the
  most any better seg factor or search could gain with this image factor.

Per configuration (averaged over prompts): min / max / median recall over the candidates, the
number of candidates with recall >= 0.5 / 0.75 / 0.9, the recall of the final image as the judge
sees it, CLIP score (with a MiniCLIP), seconds per prompt, and GFLOPs per prompt (counted once, on
the first prompt: the cost that does not depend on the device; seconds depend on how well the
device runs a batch, and the image-space baseline is one batch of K images). Results are cached
per (prompt, configuration), so an interrupted run resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from ..compliance.best_of import best_of_images
from ..compliance.recall import object_recall, present_categories
from ..compliance.sbpc import sbpc
from ..models.judge import Judge
from ..pipelines.factor_graph import FactorGraphPipeline
from ..pipelines.split import split_render
from ..pipelines.text2image import Text2ImagePipeline
from ..world.conditions import resize_labels
from ..world.vocab import parse_prompt
from .prompts import PromptEntry
from .runner import WorldRenders
from .timing import count_flops, sync

THRESHOLDS = (0.5, 0.75, 0.9)


CEILING = "real renders (ceiling)"
MAP_CEILING = "FG-DM on real maps (map ceiling)"


def configurations(ns: list[int], cond_steps: list[int], baseline_n: int | list[int], ceiling: bool = True,
                   complete: bool = False, split: float | None = None, split_steps: float = 1.0) -> list[dict]:  # fmt: skip
    """The table's rows: base N=1, image-space SBPC at each ``baseline_n`` above 1, FG-DM at each
    t and N (and with completion, with object-split rendering), then the two ceilings (and the map
    ceiling with object-split rendering). With ``split_steps`` < 1 the split rows say so in their
    name: "+ split (first 0.6)"."""
    tag = "split" if split_steps == 1 else f"split (first {split_steps:g})"
    out = [{"config": "base N=1", "kind": "base", "n": 1}]
    for k in sorted({baseline_n} if isinstance(baseline_n, int) else set(baseline_n)):
        if k > 1:
            out.append({"config": f"base N={k} + judge", "kind": "base", "n": k})
    out += [{"config": f"FG-DM t={t} N={n}", "kind": "fgdm", "n": n, "t": t} for t in cond_steps for n in ns]
    if complete:
        out += [{"config": f"FG-DM t={t} N={n} + complete", "kind": "fgdm", "n": n, "t": t, "complete": True}
                for t in cond_steps for n in ns]  # fmt: skip
    if split is not None:
        out += [{"config": f"FG-DM t={t} N={n} + {tag}", "kind": "fgdm", "n": n, "t": t, "split": split,
                 "split_steps": split_steps} for t in cond_steps for n in ns]  # fmt: skip
    if split is not None and complete:  # the completed map drawn one object at a time
        out += [{"config": f"FG-DM t={t} N={n} + complete + {tag}", "kind": "fgdm", "n": n, "t": t, "complete": True,
                 "split": split, "split_steps": split_steps} for t in cond_steps for n in ns]  # fmt: skip
    if ceiling:
        out += [{"config": CEILING, "kind": "real", "n": 1}, {"config": MAP_CEILING, "kind": "realmap", "n": 1}]
        if split is not None:
            out.append({"config": f"{MAP_CEILING} + {tag}", "kind": "realmap", "n": 1, "split": split,
                        "split_steps": split_steps})
    return out


def prompt_render(prompt: str, objects: list[str], seed: int, size: int):
    """The world render showing exactly ``objects`` that the ``real renders (ceiling)`` row draws for
    ``prompt`` with image seed ``seed``, at the model's ``size`` (renders exist from 64 px)."""
    size = max(64, size)
    return WorldRenders([PromptEntry(prompt, tuple(objects))]).render(prompt, seed, size - size % 8)[0]


def result_file(out: Path, p: int, config: str) -> Path:
    """Where a run in ``out`` keeps prompt ``p``'s result for configuration ``config``."""
    return out / "results" / f"p{p:05d}-{config.replace(' ', '_')}.json"


def _generate(cfg: dict, prompt: str, objects: list[str], s: int, *, graph: FactorGraphPipeline,
              base: Text2ImagePipeline, judge: Judge, cond_size: int, image_steps: int) -> tuple:
    """One configuration's work on one prompt: (final image, candidate recalls, extra fields of its
    result). What ``seconds`` and ``gflops`` measure: judging is included for the image-space
    baseline (it is part of it)."""
    if cfg["kind"] in ("real", "realmap"):
        render = prompt_render(prompt, objects, s, base.model.unet.config.sample_size * base.model.vae_scale_factor)
        if cfg["kind"] == "realmap":
            seg = resize_labels(render.seg, cond_size)
            if cfg.get("split") is not None:
                final = split_render(graph, prompt, seg, seed=s, whole=cfg["split"], objects=objects, steps=image_steps,
                                     split_steps=cfg.get("split_steps", 1.0))  # fmt: skip
            else:
                final = graph(prompt, factors=[f for f in graph.spec.factors if f != "seg"], given={"seg": seg}, seed=s,
                              steps={"image": image_steps})  # fmt: skip
            return final.images[0], [object_recall(objects, present_categories(seg))], {}
    if cfg["kind"] == "base":
        res = best_of_images(base, judge, prompt, n=cfg["n"], seed=s, steps=image_steps)
        return res.image, [c.recall for c in res.candidates], {}
    if cfg["kind"] == "real":
        seg = judge.segment_images([render.image])[0]
        return Image.fromarray(render.image), [object_recall(objects, present_categories(seg))], {}
    res = sbpc(graph, prompt, n=cfg["n"], cond_steps=cfg["t"], cond_size=cond_size, seed=s,
               image_steps=image_steps, complete=cfg.get("complete", False), split=cfg.get("split"),
               split_steps=cfg.get("split_steps", 1.0))  # fmt: skip
    extra = {} if res.completion is None else {"completed_recall": res.completed_recall, "completion": res.completion}
    return res.image, [c.recall for c in res.candidates], extra


def _run_one(cfg: dict, prompt: str, objects: list[str], p: int, *, graph: FactorGraphPipeline,
             base: Text2ImagePipeline, judge: Judge, seed: int, cond_size: int, image_steps: int,
             image_dir: Path) -> dict:  # fmt: skip
    sync()
    t0 = time.perf_counter()
    image, cand, extra = _generate(cfg, prompt, objects, seed + 1000 * p, graph=graph, base=base, judge=judge,
                                   cond_size=cond_size, image_steps=image_steps)  # fmt: skip
    sync()
    seconds = time.perf_counter() - t0
    final = object_recall(objects, present_categories(judge.segment_images([image])[0]))
    name = f"p{p:05d}-{cfg['config'].replace(' ', '_').replace('=', '').replace('+', '')}.png"
    image.save(image_dir / name)
    return {"prompt_index": p, "config": cfg["config"], "candidates": cand, "final_image_recall": final,
            "seconds": seconds, "image": name, **extra}  # fmt: skip


def run_sbpc_table(graph: FactorGraphPipeline, judge: Judge, prompts: list[str], out: Path, *,
                   ns: list[int] = (1, 5, 10), cond_steps: list[int] = (10, 20), baseline_n: int | list[int] = 10,
                   cond_size: int = 64, image_steps: int = 25, seed: int = 0, clip=None, ceiling: bool = True,
                   complete: bool = False, split: float | None = None, split_steps: float = 1.0,
                   progress: bool = True) -> dict:  # fmt: skip
    """Run every configuration on every prompt (resumable in ``out``); returns {rows, skipped}."""
    configs = configurations(list(ns), list(cond_steps), baseline_n, ceiling, complete, split, split_steps)
    base = Text2ImagePipeline(graph.base)
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    usable = [(p, t, list(parse_prompt(t).things)) for p, t in enumerate(prompts)]
    skipped = [t for _, t, o in usable if not o]
    usable = [u for u in usable if u[2]]
    if not usable:
        raise ValueError("no prompt names a known object; SBPC needs prompts with objects")
    # operations per prompt, once per configuration on the first prompt (the same for every prompt
    # of a configuration): the cost that does not depend on whether the device is compute-bound
    flops_file = out / "flops.json"
    flops = json.loads(flops_file.read_text()) if flops_file.exists() else {}
    p0, text0, objects0 = usable[0]
    for cfg in configs:
        if cfg["config"] not in flops:
            flops[cfg["config"]] = count_flops(lambda c=cfg: _generate(
                c, text0, objects0, seed + 1000 * p0, graph=graph, base=base, judge=judge, cond_size=cond_size,
                image_steps=image_steps))  # fmt: skip
            flops_file.write_text(json.dumps(flops, indent=1))
    results: dict[str, list[dict]] = {c["config"]: [] for c in configs}
    bar = tqdm(total=len(usable) * len(configs), desc="sbpc table", disable=not progress)
    for p, text, objects in usable:
        for cfg in configs:
            f = result_file(out, p, cfg["config"])
            if f.exists():
                row = json.loads(f.read_text())
            else:
                row = _run_one(cfg, text, objects, p, graph=graph, base=base, judge=judge, seed=seed,
                               cond_size=cond_size, image_steps=image_steps, image_dir=out / "images")  # fmt: skip
                tmp = f.with_suffix(".partial")
                tmp.write_text(json.dumps(row))
                tmp.replace(f)
            results[cfg["config"]].append(row)
            bar.update()
    bar.close()
    rows = []
    for cfg in configs:
        rs = results[cfg["config"]]
        cands = [r["candidates"] for r in rs]
        row = {"config": cfg["config"], "n": cfg["n"], "cond_steps": cfg.get("t"),
               "avg_min_recall": round(float(np.mean([min(c) for c in cands])), 4),
               "avg_max_recall": round(float(np.mean([max(c) for c in cands])), 4),
               "avg_median_recall": round(float(np.mean([np.median(c) for c in cands])), 4),
               **{f"avg_candidates_ge_{t}": round(float(np.mean([sum(x >= t for x in c) for c in cands])), 3)
                  for t in THRESHOLDS},
               "final_image_recall": round(float(np.mean([r["final_image_recall"] for r in rs])), 4),
               "seconds_per_prompt": round(float(np.mean([r["seconds"] for r in rs])), 4),
               "gflops_per_prompt": round(flops[cfg["config"]] / 1e9, 2),
               "prompts": len(rs)}  # fmt: skip
        if cfg.get("complete"):
            row["avg_completed_map_recall"] = round(float(np.mean([r["completed_recall"] for r in rs])), 4)
            row["avg_objects_relabelled"] = round(float(np.mean([len(r["completion"]) for r in rs])), 3)
        if clip is not None:
            from .features import clip_score

            ims = torch.stack([torch.from_numpy(np.array(Image.open(out / "images" / r["image"]).convert("RGB")))
                               .permute(2, 0, 1) for r in rs]).float() / 255  # fmt: skip
            texts = [prompts[r["prompt_index"]] for r in rs]
            row["clip_score"] = round(clip_score(clip.images(ims), clip.texts(texts)), 3)
        rows.append(row)
    return {"rows": rows, "skipped_prompts": skipped}


def sbpc_sheet(out: Path, rows: list[dict], prompts: list[str], n_prompts: int = 6) -> Image.Image:
    """A contact sheet of a finished run: the first ``n_prompts`` scored prompts, one column per
    configuration, each final image with the judge's recall of the prompt's objects under it."""
    from ..world.sheet import contact_sheet

    configs = [r["config"] for r in rows]
    done = sorted({int(f.name[1:6]) for f in (out / "results").glob("p*.json")})[:n_prompts]
    if not done:
        raise ValueError(f"{str(out)!r} holds no SBPC results to lay out")
    tiles, notes = [], []
    for p in done:
        res = [json.loads(result_file(out, p, c).read_text()) for c in configs]
        tiles.append([np.asarray(Image.open(out / "images" / r["image"]).convert("RGB")) for r in res])
        notes.append([[(f"recall {r['final_image_recall']:.2f}", (0, 0, 0))] for r in res])
    return contact_sheet(tiles, headers=configs, captions=[prompts[p] for p in done], tile_notes=notes)


def markdown_table(rows: list[dict]) -> str:
    cols = ["config", "avg_min_recall", "avg_median_recall", "avg_max_recall", "avg_completed_map_recall",
            "avg_objects_relabelled", "avg_candidates_ge_0.5",
            "avg_candidates_ge_0.75", "avg_candidates_ge_0.9", "final_image_recall", "clip_score", "seconds_per_prompt",
            "gflops_per_prompt"]  # fmt: skip
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c == "config" else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_recall_and_time(rows: list[dict], size: tuple[int, int] = (1320, 360)) -> Image.Image:
    """Three panels: final-image recall vs N, seconds per prompt vs N, and recall vs seconds (which
    configuration is best at a given time), one line per series (FG-DM at each t; the base model
    and image-space SBPC at each of its N; the ceilings as points)."""
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        key = (f"FG-DM t={r['cond_steps']}" + "".join(f" + {x}" for x in ("complete", "split") if f" + {x}" in r["config"])
               if r["cond_steps"] is not None
               else r["config"] if r["config"].startswith((CEILING, MAP_CEILING)) else "base (+judge)")  # fmt: skip
        series.setdefault(key, []).append((r["n"], r["final_image_recall"], r["seconds_per_prompt"]))
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=12)
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    xs = sorted({r["n"] for r in rows})
    t_max = max(v[2] for s in series.values() for v in s) * 1.1 or 1.0
    panels = (("final image recall vs N", 1, None), ("seconds per prompt vs N", 2, None),
              ("final image recall vs seconds per prompt", 1, t_max))  # fmt: skip
    pw_all = w // len(panels)
    for panel, (title, idx, x_max) in enumerate(panels):
        x0, y0, pw, ph = 50 + panel * pw_all, 30, pw_all - 80, h - 80
        lo, hi = (0.0, 1.0) if idx == 1 else (0.0, t_max)
        d.rectangle([x0, y0, x0 + pw, y0 + ph], outline=(0, 0, 0))
        d.text((x0, 8), title, fill=(0, 0, 0), font=font)
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            y = y0 + ph - (v - lo) / (hi - lo) * ph
            d.line([x0 - 4, y, x0, y], fill=(0, 0, 0))
            d.text((x0 - 44, y - 6), f"{v:.2f}", fill=(0, 0, 0), font=font)
            if x_max is not None:  # seconds along x
                x = x0 + k / 4 * pw
                d.line([x, y0 + ph, x, y0 + ph + 4], fill=(0, 0, 0))
                d.text((x - 10, y0 + ph + 6), f"{x_max * k / 4:.1f}s", fill=(0, 0, 0), font=font)

        def px(n, secs, x0=x0, pw=pw, x_max=x_max):
            return x0 + secs / x_max * pw if x_max is not None else x0 + (xs.index(n) + 0.5) / len(xs) * pw

        if x_max is None:
            for n in xs:
                d.text((px(n, 0) - 6, y0 + ph + 4), f"N={n}", fill=(0, 0, 0), font=font)
        for j, (name, pts) in enumerate(series.items()):
            c = colours[j % len(colours)]
            pts = sorted(pts)
            coords = [(px(n, secs), y0 + ph - (v - lo) / (hi - lo) * ph) for n, rec, secs in pts
                      for v in [rec if idx == 1 else secs]]  # fmt: skip
            if len(coords) > 1:
                d.line(coords, fill=c, width=2)
            for (x, y), (n, _, _) in zip(coords, pts, strict=True):
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
                if x_max is not None:
                    d.text((x + 4, y - 14), f"N={n}", fill=c, font=font)
            if panel == 0:  # the legend at the bottom: final images' recall (and the ceilings') is rarely that low
                d.text((x0 + 6, y0 + ph - 6 - 14 * (len(series) - j)), name, fill=c, font=font)
    return img

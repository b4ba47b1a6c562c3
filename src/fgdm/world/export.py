"""Exporting SceneWorld samples as a folder of PNGs + JSONL that any tool can train on.

Layout of an export folder (``world.json`` documents it again)::

    world.json            settings, category table, palette, conventions, timing
    samples.jsonl         one record per sample: caption, grounding, objects + boxes, files
    images/NNNNNN.png     RGB image (with the scene's style)
    seg/NNNNNN.png        palette-coloured segmentation (3 channels, what the papers feed a VAE)
    seg_ids/NNNNNN.png    class ids (8-bit, 255 = void)
    instance/NNNNNN.png   instance ids (8-bit, 0 = background)
    depth/NNNNNN.png      normalised inverse depth, 3 channels (near = white)
    depth_raw/NNNNNN.png  distance in centimetres (16-bit)
    normal/NNNNNN.png     normals, n * 127.5 + 127.5
    sketch/NNNNNN.png     soft edges, white on black
    sheet.png             contact sheet of the first rows (optional)
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import __version__
from ..runs import staged_output, write_json
from .categories import CATEGORIES, VOID_ID
from .dataset import make_sample
from .palette import PALETTE
from .render import check_size
from .scene import WorldConfig
from .sheet import contact_sheet

MARKER = "world.json"
FOLDERS = ("images", "seg", "seg_ids", "instance", "depth", "depth_raw", "normal", "sketch")
SHEET_COLUMNS = ("images", "seg", "depth", "normal", "sketch")
CONVENTIONS = {
    "seg": "class ids painted with the fixed palette (world.json 'palette'); void = black",
    "seg_ids": f"class ids, {VOID_ID} = void",
    "instance": "instance ids, 0 = background; matches samples.jsonl objects[].instance_id",
    "depth": "min-max normalised inverse depth per image, replicated to 3 channels, near = 255",
    "depth_raw": "distance from the camera in centimetres (uint16)",
    "normal": "normalise(-dd/dx, -dd/dy, 1) of the normalised inverse depth d, per image width; n*127.5+127.5",
    "sketch": "soft edges in [0, 1] scaled to 0-255, white on black",
}


def _write_one(args: tuple[int, int, int, WorldConfig, str]) -> dict:
    index, seed, size, cfg, stage = args
    sample = make_sample(index, seed=seed, size=size, config=cfg)
    r = sample.render
    conds = r.conditions()
    name = f"{index:06d}.png"
    arrays = {
        "images": r.image, "seg": conds["seg"], "seg_ids": r.seg, "instance": r.instance,
        "depth": conds["depth"], "depth_raw": np.clip(np.rint(r.depth * 100), 0, 65535).astype(np.uint16),
        "normal": conds["normal"], "sketch": conds["sketch"],
    }  # fmt: skip
    for folder, arr in arrays.items():
        Image.fromarray(arr).save(Path(stage) / folder / name, compress_level=1)
    rec = sample.record()
    rec["files"] = {folder: f"{folder}/{name}" for folder in FOLDERS}
    return rec


def export_dataset(
    out: str | Path,
    *,
    n: int,
    size: int = 128,
    seed: int = 0,
    config: WorldConfig | None = None,
    overwrite: bool = False,
    workers: int = 1,
    sheet_rows: int = 16,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Render samples ``0..n-1`` of the world with base ``seed`` into the folder ``out``.

    ``command`` (the command line that asked for it, if any) is kept in ``world.json``.

    The folder is written in a staging folder and moved into place at the end: an interrupted
    export leaves nothing behind. ``sheet_rows`` = 0 skips the contact sheet.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    size = check_size(size)
    cfg = config or WorldConfig()
    t0 = time.perf_counter()
    with staged_output(out, marker=MARKER, overwrite=overwrite) as stage:
        for folder in FOLDERS:
            (stage / folder).mkdir()
        jobs = [(i, seed, size, cfg, str(stage)) for i in range(n)]
        bar = tqdm(total=n, desc="render", unit="scene", disable=not progress)
        with (stage / "samples.jsonl").open("w") as f:
            if workers == 1:
                results = map(_write_one, jobs)
                pool = None
            else:
                pool = ProcessPoolExecutor(workers)
                results = pool.map(_write_one, jobs, chunksize=max(1, min(64, n // (4 * workers))))
            try:
                for rec in results:
                    f.write(json.dumps(rec) + "\n")
                    bar.update()
            finally:
                if pool is not None:
                    pool.shutdown(cancel_futures=True)
                bar.close()
        seconds = time.perf_counter() - t0
        if sheet_rows > 0:
            _write_sheet(stage, min(n, sheet_rows), size)
        write_json(stage / MARKER, {
            "format": "fgdm.sceneworld/1",
            "fgdm_version": __version__,
            "n": n, "size": size, "seed": seed, "config": cfg.to_dict(),
            "command": command,
            "seconds": round(seconds, 3), "workers": workers,
            "folders": list(FOLDERS), "conventions": CONVENTIONS,
            "categories": [{"id": c.id, "name": c.name, "kind": c.kind} for c in CATEGORIES],
            "palette": [list(p) for p in PALETTE],
        })  # fmt: skip
    return Path(out)


def _write_sheet(folder: Path, rows: int, size: int) -> None:
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()[:rows]]
    grid = [[np.asarray(Image.open(folder / r["files"][c]).convert("RGB")) for c in SHEET_COLUMNS] for r in records]
    sheet = contact_sheet(
        grid,
        headers=["image", "seg", "depth", "normal", "sketch"],
        captions=[r["caption"] for r in records],
        cell=min(size, 192),
    )
    sheet.save(folder / "sheet.png", optimize=True)


def read_samples(folder: str | Path) -> list[dict]:
    """The records of an export folder (``samples.jsonl``)."""
    path = Path(folder) / "samples.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise ValueError(f"cannot read {str(path)!r}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSONL: {e.msg} (line {e.lineno})") from None


def export_stats(records: list[dict]) -> dict:
    """Summary statistics of an export's records: objects per scene, how much captions name, mixes."""
    if not records:
        raise ValueError("records is empty: nothing to summarise")
    n_obj = np.array([len(r["objects"]) for r in records])
    named = [{g["category"] for g in r["grounding"] if g["kind"] == "thing"} for r in records]
    present = [{o["category"] for o in r["objects"]} for r in records]
    counts: dict[str, dict[str, int]] = {"kind": {}, "style": {}}
    cat_counts: dict[str, int] = {}
    for r in records:
        for key in ("kind", "style"):
            counts[key][r[key]] = counts[key].get(r[key], 0) + 1
        for o in r["objects"]:
            cat_counts[o["category"]] = cat_counts.get(o["category"], 0) + 1
    # of the categories present, how many the caption names (scenes with none present are left out);
    # of those it names, how many are present (1 for renders; a generated map may lack some)
    frac_named = [len(nm & pr) / len(pr) for nm, pr in zip(named, present, strict=True) if pr]
    frac_present = [len(nm & pr) / len(nm) for nm, pr in zip(named, present, strict=True) if nm]
    n_named = np.array([len(nm) for nm in named])

    def mean(v: list[float]) -> float | None:
        return round(float(np.mean(v)), 3) if v else None

    def hist(a: np.ndarray) -> dict[int, int]:
        return {int(k): int((a == k).sum()) for k in np.unique(a)}

    fits = [r["seg_palette_fit"] for r in records if r.get("seg_palette_fit") is not None]  # generated only
    out = {
        "samples": len(records),
        "objects_per_scene_mean": round(float(n_obj.mean()), 3),
        "objects_per_scene_hist": hist(n_obj),
        "categories_seen": len(cat_counts),
        "captions_naming_every_category": mean([f == 1.0 for f in frac_named]),
        "fraction_of_categories_named_mean": mean(frac_named),
        "fraction_of_named_categories_present_mean": mean(frac_present),
        "categories_named_per_caption_hist": hist(n_named),
        "captions_with_relation": round(float(np.mean([any(w in r["caption"] for w in (" to the left of ", " to the right of ", " above ", " below ", " in front of ", " behind ", " next to ")) for r in records])), 3),
        "scene_kinds": dict(sorted(counts["kind"].items())),
        "styles": dict(sorted(counts["style"].items())),
        "least_common_categories": sorted(cat_counts.items(), key=lambda kv: kv[1])[:5],
    }  # fmt: skip
    if fits:  # how much of the sampled maps decoded without guessing (fgdm.world.conditions.palette_fit)
        out["seg_palette_fit_mean"] = mean(fits)
    return out


def folders_sheet(folders: list[str | Path], *, columns: tuple[str, ...] = ("images", "seg"), rows: int = 6,
                  cell: int = 128) -> Image.Image:  # fmt: skip
    """A contact sheet of export folders side by side (rendered or generated): row i shows sample i
    of every folder, its ``columns`` (export sub-folders) in order. The row's caption is the
    samples' caption, or their distinct captions joined by " | " where the folders differ."""
    if not folders:
        raise ValueError("folders is empty: name at least one export folder")
    if not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive integer, got {rows!r}")
    if not columns:
        raise ValueError("columns is empty: name at least one sub-folder, e.g. images,seg")
    recs = [read_samples(f) for f in folders]
    for f, rs in zip(folders, recs, strict=True):
        if not rs:
            raise ValueError(f"folder {str(f)!r} holds no samples")
        missing = [c for c in columns if c not in rs[0]["files"]]
        if missing:
            raise ValueError(f"folder {str(f)!r} has no {missing}; it has {sorted(rs[0]['files'])}")
    n = min(rows, *(len(rs) for rs in recs))
    grid = [[np.asarray(Image.open(Path(f) / rs[i]["files"][c]).convert("RGB")) for f, rs in zip(folders, recs, strict=True)
             for c in columns] for i in range(n)]  # fmt: skip
    captions = [" | ".join(dict.fromkeys(rs[i]["caption"] for rs in recs)) for i in range(n)]
    headers = [f"{c} of {Path(f).name}" for f in folders for c in columns]
    return contact_sheet(grid, headers=headers, captions=captions, cell=cell)


def load_labelled(folder: str | Path, size: int | None = None) -> dict:
    """Images, class ids and depth (0-255) of an export folder (rendered or generated) as uint8
    tensors — the judge trainer's data pool. Samples without depth get depth = 0 and are flagged."""
    import torch

    from .conditions import resize_image, resize_labels

    root = Path(folder)
    recs = read_samples(root)
    img, seg, dep, has = [], [], [], []
    for r in recs:
        files = r["files"]
        im = np.asarray(Image.open(root / files["images"]).convert("RGB"))
        sg = np.asarray(Image.open(root / files["seg_ids"]))
        dp = np.asarray(Image.open(root / files["depth"]).convert("L")) if "depth" in files else np.zeros(sg.shape, np.uint8)
        if size and im.shape[0] != size:
            im, sg = resize_image(im, size), resize_labels(sg, size)
            dp = np.asarray(Image.fromarray(dp).resize((size, size), Image.BILINEAR))
        img.append(im)
        seg.append(sg)
        dep.append(dp)
        has.append("depth" in files)
    if not img:
        raise ValueError(f"dataset {str(folder)!r} holds no samples")
    return {"image": torch.from_numpy(np.stack(img)).permute(0, 3, 1, 2), "seg": torch.from_numpy(np.stack(seg)),
            "depth": torch.from_numpy(np.stack(dep)), "has_depth": torch.tensor(has)}  # fmt: skip

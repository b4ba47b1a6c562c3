"""Real labels, generated images: a SceneWorld export whose images the image factor re-renders.

The FG-DM data claim (issue 6) trains a segmenter only on generated samples, in which both the
seg map and the image are sampled. This script isolates the image factor: every scene of a
rendered export (`fgdm world render`) keeps its caption and every label file, and its image is
replaced by the graph's image factor given that scene's real seg map and caption (seed = the
scene's index). A judge trained on the result against one trained on the original export (the
same scenes, labels and steps; `configs/judge_real_cpu.yaml` renders exactly the scenes of
`fgdm world render --n 400 --size 128 --seed 1`) measures how much the image factor alone costs.

    fgdm world render --n 400 --size 128 --seed 1 --out runs/world_400_s1 --sheet-rows 0
    python scripts/image_factor_dataset.py --world runs/world_400_s1 --graph runs/train/graph_cpu \\
        --out runs/imgfactor_400_s1
    fgdm train judge --config configs/judge_generated_cpu.yaml --set extra.dataset=runs/imgfactor_400_s1 \\
        --set output_dir=runs/train/judge_imgfactor_cpu
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.runs import check_output_dir, staged_output
from fgdm.world.export import MARKER, read_samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True, help="a rendered export folder (fgdm world render)")
    ap.add_argument("--graph", required=True, help="a graph whose image factor takes seg as a parent")
    ap.add_argument("--out", required=True, help="the new export folder")
    ap.add_argument("--steps", type=int, default=None, help="image factor DDIM steps (default: the graph's)")
    ap.add_argument("--batch-size", type=int, default=16,
                    help="scenes per image-factor batch (default 16; speed only: each keeps its seed and map)")
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier output of this script")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args()
    world = Path(a.world)
    try:  # bad folders are the user's input: argument errors, not tracebacks
        meta = json.loads((world / MARKER).read_text())
        if meta.get("format") != "fgdm.sceneworld/1":
            ap.error(f"--world {a.world!r} is not a rendered export (format {meta.get('format')!r})")
        records = read_samples(world)
        graph = FactorGraphPipeline.from_pretrained(a.graph)
        check_output_dir(a.out, marker=MARKER, overwrite=a.overwrite, arg="--out")
    except OSError as e:
        ap.error(f"--world {a.world!r} holds no {MARKER}: {e.strerror}")
    except ValueError as e:
        ap.error(str(e))
    image = graph.spec.factors.get("image")
    if image is None or "seg" not in image.parents:
        ap.error(f"--graph {a.graph!r} has no image factor conditioned on seg")
    if a.steps is not None and a.steps < 1:
        ap.error(f"--steps must be >= 1, got {a.steps}")
    if a.batch_size < 1:
        ap.error(f"--batch-size must be >= 1, got {a.batch_size}")
    size = int(meta["size"])
    steps = {"image": a.steps} if a.steps else None
    t0 = time.perf_counter()
    with staged_output(a.out, marker=MARKER, overwrite=a.overwrite, arg="--out") as stage:
        for folder in meta["folders"]:
            if folder != "images":
                shutil.copytree(world / folder, stage / folder)
        (stage / "images").mkdir()
        bar = tqdm(total=len(records), desc="image factor", unit="scene", disable=a.quiet)
        with (stage / "samples.jsonl").open("w") as f:
            for b in range(0, len(records), a.batch_size):
                batch = records[b : b + a.batch_size]
                segs = [np.asarray(Image.open(world / r["files"]["seg_ids"])) for r in batch]
                out = graph([r["caption"] for r in batch], factors=["image"], given={"seg": segs},
                            seed=[r["index"] for r in batch], sizes={"image": size}, steps=steps)  # fmt: skip
                for r, img in zip(batch, out.images, strict=True):
                    img.convert("RGB").save(stage / r["files"]["images"], compress_level=1)
                    f.write(json.dumps({**r, "image_source": "image factor"}) + "\n")
                bar.update(len(batch))
        bar.close()
        spec = graph.spec.factors["image"]
        meta.update({
            "images_from": {"graph": str(graph.path), "model_fingerprint": graph.base.fingerprint,
                            "world": str(world), "seed": "the scene's index", "size": size,
                            "steps": a.steps or spec.steps, "guidance": spec.guidance},
            "command": shlex.join(["python", *sys.argv]), "seconds": round(time.perf_counter() - t0, 3),
        })  # fmt: skip
        (stage / MARKER).write_text(json.dumps(meta, indent=1))
    print(f"wrote {len(records)} scenes with image-factor images to {a.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

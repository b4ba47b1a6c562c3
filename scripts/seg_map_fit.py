"""How decodable are the seg factor's sampled maps? Palette fit by graph and guidance scale.

A sampled segmentation map is decoded to classes by nearest palette colour
(`fgdm.world.conditions.decode_segmentation`); where a pixel's colour lies farther than the
decoder's tolerance (30) from every palette colour, its class is guessed from blends and
neighbours. `palette_fit` is the share of pixels within the tolerance. For each graph and each
seg guidance scale this draws one map per prompt (the first N of --prompts, seeds 0..N-1, the
graph's seg steps and size, or --steps and --size) and reports the mean palette fit at each
--tolerance, with the maps' object recall of the prompt's things and the thing classes per map (as
`fgdm eval fgdm` counts them) and the recall of the same maps against the next prompt's objects
(chance: a map that holds many classes names some objects of any prompt). The reference row: N
held-out real maps (world seed 50000) through the same base's VAE, the best a sampled map can
score; their recall is against each one's own caption (small objects vanish at 64 px, so it is
below 1).

    python scripts/seg_map_fit.py --graph runs/train/graph_cpu runs/train/graph_abl_kd \\
        --prompts runs/captions_400.json --n 12 --guidance 1 2 4 7.5
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm import tqdm

from fgdm.eval.fgdm_quality import object_counts
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.pipelines.text2image import latents_to_images
from fgdm.world.conditions import decode_segmentation, encode_segmentation, palette_fit, resize_labels
from fgdm.world.dataset import make_sample
from fgdm.world.prompts import read_prompts
from fgdm.world.vocab import parse_prompt


def fits(rgbs: list[np.ndarray], tolerances: list[float]) -> dict:
    return {f"palette_fit_{t:g}": round(float(np.mean([palette_fit(r, tolerance=t) for r in rgbs])), 4)
            for t in tolerances}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", nargs="+", required=True, help="graph folders with a seg factor")
    ap.add_argument("--prompts", required=True, help="prompt file (text lines or MultiGen JSON)")
    ap.add_argument("--n", type=int, default=12, help="prompts (one map each)")
    ap.add_argument("--guidance", type=float, nargs="+", default=None,
                    help="seg guidance scales (default: each graph's own)")  # fmt: skip
    ap.add_argument("--tolerance", type=float, nargs="+", default=[30.0, 15.0], help="RGB distances")
    ap.add_argument("--real-seed", type=int, default=50000, help="world seed of the reference maps")
    ap.add_argument("--size", type=int, default=None,
                    help="map size in pixels (default: each graph's seg size), e.g. 64, the size SBPC samples at")
    ap.add_argument("--steps", type=int, default=None, help="seg steps (default: each graph's own)")
    a = ap.parse_args()
    if a.n < 1:
        ap.error(f"--n must be >= 1, got {a.n}")
    if a.size is not None and (a.size < 64 or a.size % 8):
        ap.error(f"--size must be a multiple of 8 and >= 64, got {a.size}")
    if a.steps is not None and a.steps < 1:
        ap.error(f"--steps must be >= 1, got {a.steps}")
    bad = [t for t in a.tolerance if t <= 0] + [g for g in a.guidance or [] if g <= 0]
    if bad:
        ap.error(f"--tolerance and --guidance must be > 0, got {bad}")
    try:  # bad input is the user's: an argument error, not a traceback
        prompts = read_prompts(a.prompts, "--prompts")[: a.n]
        graphs = {g: FactorGraphPipeline.from_pretrained(g) for g in a.graph}
    except ValueError as e:
        ap.error(str(e))
    for path, g in graphs.items():
        if "seg" not in g.spec.factors:
            ap.error(f"--graph {path!r} has no seg factor")
    objects = [parse_prompt(p).things for p in prompts]
    rows, bases = [], set()
    for path, g in graphs.items():
        spec = g.spec.factors["seg"]
        size = a.size or spec.size or g.native_size()
        if (g.base.fingerprint, size) not in bases:  # one reference per base and size
            bases.add((g.base.fingerprint, size))
            real, own = [], []
            for i in range(len(prompts)):
                sample = make_sample(i, seed=a.real_seed, size=max(64, size))
                lab = sample.render.seg
                real.append(encode_segmentation(resize_labels(lab, size) if lab.shape[0] != size else lab))
                own.append(parse_prompt(sample.caption.text).things)
            back = [np.asarray(im) for im in latents_to_images(g.base.vae, g.encode_maps(real))]
            row = {"graph": path, "maps": "real, through the VAE", "guidance": None, **fits(back, a.tolerance)}
            # other scenes than the prompts': recall of each real map against its own caption, the
            # ceiling of a map at this size after the VAE
            row.update(object_counts([decode_segmentation(r) for r in back], own, "seg"))
            rows.append(row)
        for gs in a.guidance or [spec.guidance]:
            rgbs = []
            for i, p in enumerate(tqdm(prompts, desc=f"{path} guidance {gs:g}")):
                out = g(p, factors=["seg"], seed=i, guidance={"seg": gs}, sizes={"seg": size},
                        steps={"seg": a.steps or spec.steps})  # fmt: skip
                rgbs.append(np.asarray(latents_to_images(g.base.vae, out.latents["seg"])[0]))
            row = {"graph": path, "maps": "sampled", "guidance": gs, **fits(rgbs, a.tolerance)}
            labels = [decode_segmentation(r) for r in rgbs]
            row.update(object_counts(labels, objects, "seg"))
            # chance: the same maps against the next prompt's objects (a map of many classes scores high)
            row["seg_object_recall_shuffled"] = object_counts(labels, objects[1:] + objects[:1], "s")["s_object_recall"]
            rows.append(row)
    print(json.dumps({"prompts": a.prompts, "n": len(prompts), "seg_steps": {p: a.steps or g.spec.factors["seg"].steps
                      for p, g in graphs.items()}, "size": a.size, "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

"""Do a labelled export's images show what its labels say? The judge's view of every image against
the sample's own labels, for exports written by ``fgdm generate --export-dataset`` (or ``fgdm world
render``, whose labels are exact).

For each folder: the judge's segmentation of each image against the sample's ``seg_ids`` (``fgdm
eval fgdm``'s consistency: pixel agreement and mIoU), the same against the *next* sample's labels
(the level of an image that ignores its labels), and the object recall of the caption's things in
the labels and in the judge's view of the images (SBPC's presence rule), plus the share of each
sample's label pixels that are thing classes the caption does not name.

    python scripts/export_consistency.py runs/gen_dataset_sdi runs/gen_dataset_sbpc_split [--judge J] [--limit N]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image

from fgdm.eval.fgdm_quality import consistency, judged, object_counts
from fgdm.models.judge import default_judge_dir, load_judge
from fgdm.world.categories import VOID_ID, category
from fgdm.world.export import read_samples
from fgdm.world.vocab import parse_prompt


def unnamed_thing_share(labels: np.ndarray, caption: str) -> float:
    """The share of ``labels``' pixels that are thing classes ``caption`` does not name (void
    pixels, which a generated map may hold, count as none)."""
    named = {category(t).id for t in parse_prompt(caption).things}
    ids, counts = np.unique(labels, return_counts=True)
    return float(sum(c for i, c in zip(ids.tolist(), counts.tolist(), strict=True)
                     if i != VOID_ID and category(i).is_thing and i not in named) / labels.size)  # fmt: skip


def measure(folder: str, judge, limit: int | None) -> dict:
    recs = read_samples(folder)[:limit]
    if not recs:
        raise ValueError(f"{folder!r} holds no samples")
    images = [np.asarray(Image.open(f"{folder}/{r['files']['images']}").convert("RGB")) for r in recs]
    labels = [np.asarray(Image.open(f"{folder}/{r['files']['seg_ids']}")) for r in recs]
    objects = [parse_prompt(r["caption"]).things for r in recs]
    seen = judged(judge, images)
    own = consistency(judge, images, labels, None, seen)
    shuffled = consistency(judge, images, labels[1:] + labels[:1], None, seen)
    return {"folder": folder, "samples": len(recs),
            "pixel_agreement": own["consistency_pixel_acc"], "pixel_agreement_shuffled": shuffled["consistency_pixel_acc"],
            "miou": own["consistency_miou"], "miou_shuffled": shuffled["consistency_miou"],
            **object_counts(labels, objects, "labels"), **object_counts(list(seen[0]), objects, "image"),
            "unnamed_thing_share": round(float(np.mean([unnamed_thing_share(m, r["caption"])
                                                        for m, r in zip(labels, recs, strict=True)])), 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="export folders (fgdm generate --export-dataset, fgdm world render)")
    ap.add_argument("--judge", default=None, help="judge folder (default: the shipped judge)")
    ap.add_argument("--limit", type=int, default=None, help="the first N samples of each folder")
    args = ap.parse_args()
    if args.limit is not None and args.limit < 1:
        ap.error(f"--limit must be >= 1, got {args.limit}")
    try:
        judge = load_judge(args.judge or default_judge_dir())
        rows = [measure(f, judge, args.limit) for f in args.folders]
    except ValueError as e:
        ap.error(str(e))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

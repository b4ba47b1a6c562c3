"""Render docs/editing_sheet.png: object-level edits applied to a SceneWorld sample's maps.

    python scripts/make_editing_sheet.py docs/editing_sheet.png
    python scripts/make_editing_sheet.py docs/editing_rerender.png --rerender [--graph DIR]

Each row is one edit of the same sample (seed 3, index 0, two objects): the segmentation, the
disparity, the normals re-derived from it and the sketch, all edited consistently. With
``--rerender`` a last column shows the image the graph's image factor (default: the shipped graph)
draws from each row's maps with the same seed and, as ``fgdm edit`` does, the sample's caption made
to follow the map (:func:`fgdm.editing.real.map_edit_prompt`: a deleted object leaves the caption,
a changed class is renamed in it).
"""

import argparse

import numpy as np

from fgdm.editing import MapSample, change_class, delete, duplicate, flip, move, resize, scribble_text
from fgdm.editing.maps import sample_conditions
from fgdm.editing.real import map_edit_prompt
from fgdm.world.conditions import encode_normals, encode_segmentation, encode_sketch
from fgdm.world.dataset import make_sample
from fgdm.world.scene import WorldConfig
from fgdm.world.sheet import contact_sheet


def _row(s: MapSample) -> list[np.ndarray]:
    return [encode_segmentation(s.seg), encode_sketch(s.disparity), encode_normals(s.normals), encode_sketch(s.sketch)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="docs/editing_sheet.png")
    ap.add_argument("--rerender", action="store_true", help="add the image factor's image of each row")
    ap.add_argument("--graph", default=None, help="with --rerender: a graph folder (default: the shipped graph)")
    ap.add_argument("--seed", type=int, default=0, help="with --rerender: the image factor's seed")
    a = ap.parse_args()
    if a.graph is not None and not a.rerender:
        ap.error("--graph is only used with --rerender")
    cfg = WorldConfig.from_dict({**WorldConfig().to_dict(), "min_objects": 2, "max_objects": 2})
    sample = make_sample(0, seed=3, size=128, config=cfg)
    s = MapSample.from_render(sample.render)
    objs = s.objects()
    big = max(objs, key=lambda i: objs[i][1])
    name = objs[big][0]
    new = "horse" if name != "horse" else "cow"
    caption = sample.caption.text
    edits = [  # (row caption, edited maps)
        ("original", s),
        (f"move {name} +24,0", move(s, big, 24, 0)),
        (f"resize {name} x1.5", resize(s, big, 1.5)),
        (f"flip {name}", flip(s, big)),
        (f"delete {name}", delete(s, big)),
        (f"duplicate {name} +60,0", duplicate(s, big, 60, 0)),
        (f"change {name} -> {new}", change_class(s, big, new)),
        ('text "HELLO" on the sketch', scribble_text(s, "HELLO")),
    ]
    edits = [(c, e, map_edit_prompt(caption, s.seg, e.seg)) for c, e in edits]  # the prompt each is re-rendered with
    rows = [_row(e) for _, e, _ in edits]
    headers = ["seg", "disparity", "normals", "sketch"]
    if a.rerender:
        from fgdm.pipelines.factor_graph import FactorGraphPipeline

        try:  # a bad folder is the user's input: an argument error, not a traceback
            pipe = FactorGraphPipeline.from_pretrained(a.graph)
        except ValueError as e:
            ap.error(str(e))
        if "image" not in pipe.spec.factors:
            ap.error(f"--graph {a.graph or '(the shipped graph)'!r} has no image factor to re-render with")
        parents = pipe.spec.factors["image"].parents
        given = {k: [sample_conditions(e)[k] for _, e, _ in edits] for k in parents}
        out = pipe([p for _, _, p in edits], factors=["image"], given=given, seed=[a.seed] * len(edits))
        rows = [[*r, np.asarray(im.convert("RGB"))] for r, im in zip(rows, out.images, strict=True)]
        headers.append(f"image ({'+'.join(parents)} given)")
        print(f"caption: {caption!r}; image factor given {parents}, seed {a.seed}")
    sheet = contact_sheet(rows, headers=headers, captions=[c for c, _, _ in edits], cell=128)
    sheet.save(a.out, optimize=True)

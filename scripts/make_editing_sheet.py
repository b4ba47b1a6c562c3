"""Render docs/editing_sheet.png: object-level edits applied to a SceneWorld sample's maps.

    python scripts/make_editing_sheet.py docs/editing_sheet.png

Each row is one edit of the same sample (seed 3, index 0, two objects): the segmentation, the
disparity, the normals re-derived from it and the sketch, all edited consistently.
"""

import sys

import numpy as np

from fgdm.editing import MapSample, delete, duplicate, flip, move, resize, scribble_text
from fgdm.world.conditions import encode_normals, encode_segmentation, encode_sketch
from fgdm.world.dataset import make_sample
from fgdm.world.scene import WorldConfig
from fgdm.world.sheet import contact_sheet


def _row(s: MapSample) -> list[np.ndarray]:
    return [encode_segmentation(s.seg), encode_sketch(s.disparity), encode_normals(s.normals), encode_sketch(s.sketch)]


if __name__ == "__main__":
    cfg = WorldConfig.from_dict({**WorldConfig().to_dict(), "min_objects": 2, "max_objects": 2})
    s = MapSample.from_render(make_sample(0, seed=3, size=128, config=cfg).render)
    objs = s.objects()
    big = max(objs, key=lambda i: objs[i][1])
    name = objs[big][0]
    edits = [
        ("original", s),
        (f"move {name} +24,0", move(s, big, 24, 0)),
        (f"resize {name} x1.5", resize(s, big, 1.5)),
        (f"flip {name}", flip(s, big)),
        (f"delete {name}", delete(s, big)),
        (f"duplicate {name} +60,0", duplicate(s, big, 60, 0)),
        ('text "HELLO" on the sketch', scribble_text(s, "HELLO")),
    ]
    sheet = contact_sheet([_row(e) for _, e in edits], headers=["seg", "disparity", "normals", "sketch"],
                          captions=[c for c, _ in edits], cell=128)  # fmt: skip
    sheet.save(sys.argv[1] if len(sys.argv) > 1 else "docs/editing_sheet.png", optimize=True)

import json
from pathlib import Path

import numpy as np
import pytest

from fgdm.world.categories import CATEGORIES, NUM_CLASSES, STUFF, THINGS, category, resolve_categories
from fgdm.world.palette import PALETTE, VOID_COLOR
from fgdm.world.sprites import load_atlas, sprites_by_category

MULTIGEN = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "multigen_coco_5_1k.json"
COCO80 = """
    person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign
    parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella
    handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove
    skateboard surfboard tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple
    sandwich orange broccoli carrot hot_dog pizza donut cake chair couch potted_plant bed
    dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven toaster sink
    refrigerator book clock vase scissors teddy_bear hair_drier toothbrush
""".split()


def test_things_are_the_80_coco_categories_in_order():
    assert [c.name for c in THINGS] == [w.replace("_", " ") for w in COCO80]


@pytest.mark.skipif(not MULTIGEN.exists(), reason="shared benchmarks not present")
def test_multigen_categories_are_all_known():
    data = json.loads(MULTIGEN.read_text())
    used = {a for e in data for k, v in e.items() if k.startswith("obj_") for a in v}
    assert used <= {c.name for c in THINGS}


def test_ids_contiguous_and_stuff():
    assert [c.id for c in CATEGORIES] == list(range(NUM_CLASSES))
    assert len(STUFF) >= 8
    assert {"sky", "grass", "water", "sand", "snow", "road", "wall", "floor"} <= {c.name for c in STUFF}


def test_palette_distinct_and_well_separated():
    pal = np.array(PALETTE + (VOID_COLOR,), dtype=float)
    assert len(PALETTE) == NUM_CLASSES
    d = np.linalg.norm(pal[:, None] - pal[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 60


def test_every_thing_has_sprites_and_glyph_categories_have_variants():
    by_cat = sprites_by_category()
    assert all(len(by_cat[c.name]) >= 1 for c in THINGS)
    assert len(by_cat["dog"]) >= 3 and len(by_cat["person"]) >= 3
    for name in (
        "fire hydrant",
        "parking meter",
        "toaster",
        "microwave",
        "oven",
        "refrigerator",
        "sink",
        "dining table",
        "bench",
    ):
        assert len(by_cat[name]) >= 1
    for s in load_atlas():  # every sprite has visible pixels and a sensible crop
        a = np.asarray(s.image)[..., 3]
        assert (a > 128).mean() > 0.05 and max(s.image.size) == 128


def test_lookup_errors_name_the_value():
    assert category("dog").id == 16 and category(0).name == "person"
    with pytest.raises(ValueError, match="'dgo'"):
        category("dgo")
    with pytest.raises(ValueError, match="out of range"):
        category(400)
    assert [c.name for c in resolve_categories(["Dogs", "puppy", "cat"])] == ["dog", "cat"]
    with pytest.raises(ValueError, match="unicorn"):
        resolve_categories(["dog", "unicorn"])


def test_docs_palette_table_matches_the_code():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "world.md").read_text()
    for c in CATEGORIES:
        r, g, b = PALETTE[c.id]
        assert f"| {c.id} | {c.name} | {c.kind} | ({r}, {g}, {b}) |" in doc, c.name


def test_drawn_sprites_reproduce_the_shipped_atlas():
    """scripts/render_atlas.py packs ``draw_sprite(name, cell)`` for every drawn sprite: the shipped
    atlas must be what the code draws now (a change to a drawing shows here), and every drawn name
    of every category must be in it."""
    from importlib import resources

    from PIL import Image

    from fgdm.world.sprites_drawn import draw_sprite

    data = resources.files("fgdm.world") / "data"
    manifest = json.loads((data / "atlas.json").read_text())
    with (data / "atlas.png").open("rb") as f:
        atlas = Image.open(f).convert("RGBA")
    drawn = {s["source"].removeprefix("drawn "): s["box"] for s in manifest["sprites"] if s["source"].startswith("drawn ")}
    assert set(drawn) == {name for cat in THINGS for name in cat.drawn}
    for name, (x, y, w, h) in drawn.items():
        shipped = np.asarray(atlas.crop((x, y, x + w, y + h)), dtype=np.int16)
        now = np.asarray(draw_sprite(name, manifest["cell"]), dtype=np.int16)
        assert now.shape == shipped.shape, name
        assert np.abs(now - shipped).mean() < 1.0, name  # Pillow versions may round differently

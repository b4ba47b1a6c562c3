import numpy as np
import pytest

from fgdm.world.categories import category
from fgdm.world.conditions import resize_labels
from fgdm.world.render import render
from fgdm.world.scene import CAMERA_HEIGHT, MIN_SIZE, STYLES, Scene, WorldConfig, sample_scene


@pytest.fixture(scope="module")
def scenes():
    return [sample_scene(s) for s in range(40)]


@pytest.fixture(scope="module")
def renders(scenes):
    return [render(sc, 128) for sc in scenes]


def test_sampling_and_rendering_are_deterministic():
    a, b = sample_scene(123), sample_scene(123)
    assert a == b
    ra, rb = render(a, 96), render(b, 96)
    for name in ("image", "seg", "instance", "depth", "normals", "sketch"):
        assert np.array_equal(getattr(ra, name), getattr(rb, name)), name
    assert sample_scene(124) != a


def test_scene_round_trips_through_a_dict():
    sc = sample_scene(7)
    assert Scene.from_dict(sc.to_dict()) == sc


def test_scenes_are_varied(scenes):
    assert {sc.kind for sc in scenes} == {"field", "street", "beach", "lake", "snow", "room"}
    assert len({o.category for sc in scenes for o in sc.objects}) > 40
    assert len({len(sc.objects) for sc in scenes}) >= 5
    assert len({sc.style for sc in scenes}) >= 3


def test_occlusion_consistency(renders):
    for r in renders:
        objs = {o.instance_id: o for o in r.scene.objects}
        inst = r.instance
        # seg agrees with the instance map
        for k, o in objs.items():
            assert (r.seg[inst == k] == o.category_id).all()
        assert set(np.unique(r.seg[inst == 0])) <= {category(b.stuff).id for b in r.scene.bands}
        # where two footprints overlap, the nearer object is the one seen, and depth is nearer there
        ids = sorted(objs)
        for i in ids:
            for j in ids:
                if objs[i].depth < objs[j].depth:
                    both = r.amodal[i] & r.amodal[j]
                    assert not (inst[both] == j).any()
        # an object is nearer than the background it covers
        for k, o in objs.items():
            m = inst == k
            if m.any():
                assert (r.depth[m] <= o.depth + 1e-5).all()
                assert (r.depth[m] < r.scene.ground_depth((np.nonzero(m)[0] + 0.5) / r.size)).all() or not o.on_ground


def test_paint_order_is_far_to_near(scenes):
    for sc in scenes:
        d = [o.depth for o in sc.objects]
        assert d == sorted(d, reverse=True)


def test_objects_stay_visible(renders):
    cfg = WorldConfig()
    for r in renders:
        for k, v in r.visible_fraction().items():
            assert v >= cfg.min_visible - 0.2, (r.scene.seed, k, v)


def test_perspective_nearer_is_lower_and_larger(scenes):
    # on the ground: size * depth * (1 - horizon) / category size is a constant (0.6 * height * jitter)
    for sc in scenes:
        for o in sc.objects:
            if o.on_ground and o.size > MIN_SIZE + 1e-6:
                k = o.size * o.depth * (1 - sc.horizon) / category(o.category).size
                assert 0.6 * CAMERA_HEIGHT * 0.84 <= k <= 0.6 * CAMERA_HEIGHT * 1.16, (sc.seed, o)
    # and the depth map of the ground falls off towards the horizon
    r = render(sample_scene(3, WorldConfig(scene_kinds=("field",))), 64)
    col = r.depth[:, 0][r.instance[:, 0] == 0]
    assert col[-1] < col[len(col) // 2]


def test_one_scene_renders_consistently_at_any_resolution():
    sc = sample_scene(11)
    small, big = render(sc, 128), render(sc, 256)
    assert (resize_labels(big.seg, 128) == small.seg).mean() > 0.97
    assert (resize_labels(big.instance, 128) == small.instance).mean() > 0.97


@pytest.mark.parametrize("size", [64, 136, 512])
def test_valid_sizes(size):
    r = render(sample_scene(1), size)
    assert r.image.shape == (size, size, 3) and r.image.dtype == np.uint8
    assert r.seg.shape == r.instance.shape == r.depth.shape == r.sketch.shape == (size, size)
    assert r.normals.shape == (size, size, 3)
    assert r.sketch.min() >= 0 and r.sketch.max() <= 1 and (r.depth > 0).all()
    assert all(c.shape == (size, size, 3) for c in r.conditions().values())


@pytest.mark.parametrize("size", [0, 56, 100, 520, 1024, 128.0, "128"])
def test_invalid_sizes(size):
    with pytest.raises(ValueError, match="size"):
        render(sample_scene(1), size)


def test_config_limits_are_respected():
    cfg = WorldConfig(min_objects=2, max_objects=3, categories=("dog", "cat"), scene_kinds=("room",))
    for s in range(15):
        sc = sample_scene(s, cfg)
        assert 1 <= len(sc.objects) <= 3 and sc.kind == "room"
        assert {o.category for o in sc.objects} <= {"dog", "cat"}
    assert max(len(sample_scene(s, WorldConfig(max_objects=1)).objects) for s in range(10)) == 1


def test_a_scene_of_given_objects():
    """``objects`` places exactly those things, one each (a repeat when named twice), is seeded
    like any scene, and leaves the drawn scenes untouched; bad names are errors naming them."""
    want = ["book", "cup", "kite", "mouse", "surfboard"]
    got = [sorted(o.category for o in sample_scene(s, objects=want).objects) for s in range(20)]
    assert sum(g == sorted(want) for g in got) >= 18 and all(set(g) <= set(want) for g in got)
    assert sorted(o.category for o in sample_scene(3, objects=["dog", "dog"]).objects) == ["dog", "dog"]
    assert sample_scene(5, objects=["dog", "cat"]) == sample_scene(5, objects=["dog", "cat"])
    assert sample_scene(5, objects=["dog", "cat"]) != sample_scene(6, objects=["dog", "cat"])
    # the drawn scenes are those every shipped model was trained on: pinned, so no change moves them
    assert [(sc.kind, [o.category for o in sc.objects]) for sc in map(sample_scene, range(4))] == [
        ("field", ["zebra", "zebra", "cat"]), ("room", ["mouse", "refrigerator", "knife"]),
        ("field", ["train", "banana", "dining table"]), ("lake", ["bird", "chair"])]  # fmt: skip
    for bad, match in (("dog", "non-empty list"), ([], "non-empty list"), (["sky"], "are stuff"),
                       (["unicorn"], "unknown category 'unicorn'")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            sample_scene(0, objects=bad)


@pytest.mark.parametrize("style", STYLES)
def test_styles(style):
    sc = sample_scene(5, WorldConfig(styles=(style,)))
    assert sc.style == style
    r = render(sc, 64)
    plain = render(sample_scene(5, WorldConfig(styles=("photo",))), 64)
    assert np.array_equal(r.seg, plain.seg)  # styles change the image only
    if style in ("grayscale", "pencil sketch"):
        assert np.abs(r.image[..., 0].astype(int) - r.image[..., 1]).mean() < 6
    if style == "night":
        assert r.image.mean() < plain.image.mean() * 0.8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_objects=0), "max_objects"),
        (dict(min_objects=4, max_objects=2), "min_objects"),
        (dict(categories=("dragon",)), "dragon"),
        (dict(scene_kinds=("moon",)), "moon"),
        (dict(styles=("oil",)), "oil"),
        (dict(style_prob=1.5), "style_prob"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**kwargs)


def test_config_yaml(tmp_path):
    p = tmp_path / "w.yaml"
    p.write_text("world:\n  max_objects: 3\n  categories: [dog, cat]\n")
    cfg = WorldConfig.from_yaml(p)
    assert cfg.max_objects == 3 and cfg.categories == ("dog", "cat")
    p.write_text("max_objectz: 3\n")
    with pytest.raises(ValueError, match="max_objectz"):
        WorldConfig.from_yaml(p)
    with pytest.raises(ValueError, match="cannot read"):
        WorldConfig.from_yaml(tmp_path / "missing.yaml")
    p.write_text("a: [\n")
    with pytest.raises(ValueError, match="YAML"):
        WorldConfig.from_yaml(p)


def test_sketch_from_outlines_labels_and_texture():
    """The world's sketch function: label boundaries (blurred) and the image's own luminance edges;
    a flat image with one label has none. Bad shapes are errors naming the argument."""
    from fgdm.world.render import sketch_from

    flat = np.full((32, 32, 3), 100, np.uint8)
    one = np.zeros((32, 32), np.uint8)
    assert sketch_from(flat, [one]).max() == 0
    square = one.copy()
    square[8:24, 8:24] = 1
    s = sketch_from(flat, [square])
    assert s.dtype == np.float32 and s.shape == (32, 32) and s.max() <= 1
    assert s[8, 16] > 0.5 and s[16, 16] == 0 and s[0, 0] == 0  # on the outline; inside and far outside: none
    striped = flat.copy()
    striped[:, 16:] = 255  # a luminance edge with no label boundary: texture, at most 0.6
    t = sketch_from(striped, [one])
    assert 0 < t[:, 15:17].max() <= 0.6 and t[:, :8].max() == 0
    with pytest.raises(ValueError, match=r"rgb must be \(H, W, 3\)"):
        sketch_from(flat[..., 0], [one])
    with pytest.raises(ValueError, match=r"label maps must be \(32, 32\)"):
        sketch_from(flat, [one[:16]])

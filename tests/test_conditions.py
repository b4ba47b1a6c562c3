import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from fgdm.world import conditions
from fgdm.world.categories import NUM_CLASSES, VOID_ID
from fgdm.world.conditions import (
    class_areas,
    decode_depth,
    decode_normals,
    decode_segmentation,
    decode_segmentation_fit,
    decode_sketch,
    encode_depth,
    encode_normals,
    encode_segmentation,
    encode_sketch,
    normalize_depth,
    normals_from_depth,
    palette_fit,
    resize_labels,
)
from fgdm.world.dataset import make_sample


@pytest.fixture(scope="module")
def renders():
    return [make_sample(i, seed=5, size=128).render for i in range(6)]


def test_palette_round_trip_is_exact(renders):
    for r in renders:
        assert np.array_equal(decode_segmentation(encode_segmentation(r.seg), min_area=0), r.seg)


def test_every_class_id_round_trips():
    seg = np.arange(NUM_CLASSES, dtype=np.uint8).reshape(9, 10).repeat(4, 0).repeat(4, 1)
    assert np.array_equal(decode_segmentation(encode_segmentation(seg), min_area=0), seg)


def _agreement(decoded, truth):
    return float((decoded == truth).mean())


def test_decode_tolerates_blur(renders):
    for r in renders:
        blurred = np.asarray(Image.fromarray(encode_segmentation(r.seg)).filter(ImageFilter.GaussianBlur(1.0)))
        dec = decode_segmentation(blurred)
        assert _agreement(dec, r.seg) > 0.97
        big = set(class_areas(r.seg, 0.005))
        assert big <= set(class_areas(dec))  # nothing sizeable lost
        assert set(class_areas(dec)) <= set(class_areas(r.seg))  # no class invented


@pytest.mark.parametrize("size", [64, 96, 200, 256])
def test_decode_tolerates_bilinear_resize(renders, size):
    for r in renders:
        resized = np.asarray(Image.fromarray(encode_segmentation(r.seg)).resize((size, size), Image.BILINEAR))
        dec = decode_segmentation(resized)
        truth = resize_labels(r.seg, size)
        assert _agreement(dec, truth) > 0.95
        assert set(class_areas(dec)) <= set(class_areas(r.seg))


def test_decode_blended_border_does_not_invent_a_third_class():
    # two classes whose colour mid-point lies near a third palette colour
    from fgdm.world.palette import PALETTE

    pal = np.array(PALETTE, float)
    best = None
    for a in range(NUM_CLASSES):
        mids = (pal[a] + pal) / 2
        d = np.linalg.norm(mids[:, None] - pal[None], axis=-1)
        d[:, a] = np.inf
        d[np.arange(NUM_CLASSES), np.arange(NUM_CLASSES)] = np.inf
        b, c = np.unravel_index(d.argmin(), d.shape)
        if best is None or d[b, c] < best[0]:
            best = (d[b, c], a, b, c)
    _, a, b, c = best
    seg = np.full((64, 64), a, np.uint8)
    seg[:, 32:] = b
    rgb = encode_segmentation(seg).astype(float)
    rgb[:, 31] = 0.6 * pal[a] + 0.4 * pal[b]  # a 2-px seam, as bilinear resizing blends it
    rgb[:, 32] = 0.4 * pal[a] + 0.6 * pal[b]
    assert np.linalg.norm(rgb[0, 31] - pal[c]) < 30  # the seam colour really is near the third class
    dec = decode_segmentation(rgb, min_area=0)
    assert set(class_areas(dec)) == {a, b}


def test_min_area_drops_specks_and_void_stays_void():
    seg = np.full((100, 100), 3, np.uint8)
    seg[10:12, 10:12] = 7  # 4 px = 0.04%
    seg[50:, :] = 20
    rgb = encode_segmentation(seg)
    rgb[:5, :5] = 0  # black = void
    dec = decode_segmentation(rgb, min_area=0.001)
    assert 7 not in class_areas(dec)
    assert dec[11, 11] == 3
    assert (dec[:5, :5] == VOID_ID).all()
    assert 7 in class_areas(decode_segmentation(rgb, min_area=0))
    assert 7 not in class_areas(decode_segmentation(rgb, min_area=10))  # pixel count form


def test_decode_fills_off_palette_noise():
    seg = np.zeros((64, 64), np.uint8)
    seg[:, 32:] = 16
    rgb = encode_segmentation(seg).astype(float)
    rng = np.random.default_rng(0)
    noisy = rgb + rng.normal(0, 12, rgb.shape)
    assert _agreement(decode_segmentation(noisy), seg) > 0.99


def test_decode_one_class_beside_void():
    """A map with a single class and black (void) pixels: the unblending step has no second class
    to mix with (it raised IndexError on such maps, which an under-trained seg factor produces)."""
    seg = np.full((16, 16), 81, np.uint8)
    seg[:4] = VOID_ID
    assert (decode_segmentation(encode_segmentation(seg), min_area=0) == seg).all()
    blurred = np.asarray(Image.fromarray(encode_segmentation(seg)).filter(ImageFilter.BoxBlur(1)))
    got = decode_segmentation(blurred)  # decodes; (a blend with black may still read as a third class:
    assert (got[:2] == VOID_ID).all() and (got[5:] == 81).all()  # unblending mixes classes, not void)


def test_decode_rejects_bad_shapes():
    with pytest.raises(ValueError, match="rgb"):
        decode_segmentation(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="seg"):
        encode_segmentation(np.zeros((8, 8, 3), np.uint8))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 60), st.integers(0, 2**31 - 1))
def test_resize_labels_never_invents_ids(h, w, size, seed):
    labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, (h, w)).astype(np.uint8)
    out = resize_labels(labels, size)
    assert out.shape == (size, size)
    assert set(np.unique(out)) <= set(np.unique(labels))


def test_depth_encoding_is_inverse_depth_near_white():
    depth = np.linspace(1, 50, 64, dtype=np.float32)[:, None] * np.ones((1, 32), np.float32)
    enc = encode_depth(depth)
    assert enc.shape == (64, 32, 3) and (enc[..., 0] == enc[..., 2]).all()
    assert enc[0, 0, 0] == 255 and enc[-1, 0, 0] == 0
    dec = decode_depth(enc)
    assert np.all(np.diff(dec[:, 0]) <= 0)  # farther rows are darker
    np.testing.assert_allclose(dec, normalize_depth(depth), atol=1 / 255)
    with pytest.raises(ValueError, match="positive"):
        encode_depth(np.zeros((4, 4)))


def test_normals_of_a_flat_map_face_the_camera_and_round_trip():
    n = normals_from_depth(np.full((32, 32), 0.5, np.float32))
    np.testing.assert_allclose(n, np.broadcast_to([0, 0, 1], n.shape), atol=1e-6)
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))  # nearer to the right
    n = normals_from_depth(ramp)
    assert (n[..., 0] < 0).all() and np.allclose(np.linalg.norm(n, axis=-1), 1, atol=1e-5)
    np.testing.assert_allclose(decode_normals(encode_normals(n)), n, atol=0.02)
    # resolution-independent: the same ramp at twice the resolution gives the same normals
    ramp2 = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    np.testing.assert_allclose(normals_from_depth(ramp2)[10, 10], n[5, 5], atol=0.02)


def test_sketch_round_trip():
    e = np.random.default_rng(1).random((16, 16)).astype(np.float32)
    np.testing.assert_allclose(decode_sketch(encode_sketch(e)), e, atol=1 / 255)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 24), st.integers(2, 24), st.integers(0, 2**31 - 1))
def test_any_exact_map_decodes_exactly(h, w, seed):
    seg = np.random.default_rng(seed).integers(0, NUM_CLASSES, (h, w)).astype(np.uint8)  # 1-px structures everywhere
    assert np.array_equal(decode_segmentation(encode_segmentation(seg), min_area=0), seg)


def _far_from_palette() -> np.ndarray:
    """An RGB colour more than 30 from every palette colour and from black (found on a coarse grid)."""
    from fgdm.world.palette import PALETTE, VOID_COLOR

    pal = np.array([*PALETTE, VOID_COLOR], float)
    grid = np.stack(np.meshgrid(*[np.arange(0, 256, 5)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    d = np.linalg.norm(grid[:, None] - pal[None], axis=-1).min(1)
    assert d.max() > 30
    return grid[d.argmax()].astype(np.uint8)


def test_palette_fit_known_maps(renders):
    for r in renders:
        assert palette_fit(encode_segmentation(r.seg)) == 1.0  # exactly painted
    assert palette_fit(np.zeros((8, 8, 3), np.uint8)) == 1.0  # void is a colour the decoder reads
    off = np.tile(_far_from_palette(), (8, 8, 1))
    assert palette_fit(off) == 0.0
    half = encode_segmentation(renders[0].seg)[:8, :8].copy()
    half[:4] = off[:4]
    assert palette_fit(half) == 0.5
    assert palette_fit(off, tolerance=500) == 1.0
    noisy = encode_segmentation(renders[0].seg).astype(int) + 8  # a small shift: every pixel still within 30
    assert palette_fit(np.clip(noisy, 0, 255)) > 0.99
    with pytest.raises(ValueError, match="tolerance"):
        palette_fit(off, tolerance=0)
    with pytest.raises(ValueError, match="rgb must be"):
        palette_fit(np.zeros((8, 8)))
    blurred = np.asarray(Image.fromarray(encode_segmentation(renders[1].seg)).filter(ImageFilter.GaussianBlur(1.5)))
    for m in (half, noisy.clip(0, 255).astype(np.uint8), blurred):  # both at once = each alone
        labels, fit = decode_segmentation_fit(m)
        assert np.array_equal(labels, decode_segmentation(m)) and fit == palette_fit(m)
    assert palette_fit(blurred) < 1.0


def test_the_decoders_vectorised_parts_equal_their_plain_definitions():
    """The box votes, the nearest palette colour and the two-colour mixes are computed in
    vectorised forms (separable sums, expanded squared distances); each equals its definition."""
    rng = np.random.default_rng(0)
    pal = np.asarray(conditions.PALETTE, np.float64)
    labels = rng.integers(0, 6, (9, 13)).astype(np.uint8)
    valid = rng.random((9, 13)) > 0.3
    for r in (1, 4):
        votes = conditions._box_votes(labels, valid, np.arange(6), radius=r)
        for y, x in [(0, 0), (4, 6), (8, 12), (2, 11)]:
            win = (slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1))
            expect = [int(((labels[win] == k) & valid[win]).sum()) for k in range(6)]
            assert votes[:, y, x].tolist() == expect
    rgb = np.concatenate([pal[:40], rng.integers(0, 256, (60, 3))]).reshape(10, 10, 3).astype(np.uint8)
    _, inv, nearest, dist, _ = conditions._nearest_colours(rgb)
    direct = np.linalg.norm(rgb.reshape(-1, 1, 3).astype(np.float64) - pal[None], axis=-1)
    assert np.array_equal(nearest[inv], direct.argmin(1)) and np.allclose(dist[inv], direct.min(1))
    assert (dist[inv][:40] == 0).all()  # exact palette colours are exactly at distance 0
    x = rng.integers(0, 256, (50, 3)).astype(np.float64)
    anchors = rng.integers(0, len(pal), (50, 2))
    has = np.ones((50, 2), bool)
    has[:10, 1] = False
    d, a, p, t = conditions._unmix(x, anchors, has)
    for i in range(50):  # the best mix (1 - t) A + t P over the real anchors A and every palette colour P
        best = np.inf
        for m in range(2 if has[i, 1] else 1):
            ca = pal[anchors[i, m]]
            ab = pal - ca
            tt = np.clip(((x[i] - ca) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-9), 0, 1)
            best = min(best, np.linalg.norm(x[i] - (ca + tt[:, None] * ab), axis=1).min())
        assert d[i] == pytest.approx(best, abs=1e-5)
        assert np.linalg.norm(x[i] - ((1 - t[i]) * pal[a[i]] + t[i] * pal[p[i]])) == pytest.approx(best, abs=1e-5)

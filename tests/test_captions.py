import numpy as np
import pytest

from fgdm.world.captions import make_caption
from fgdm.world.categories import category
from fgdm.world.dataset import make_sample
from fgdm.world.scene import WorldConfig, sample_scene
from fgdm.world.vocab import parse_prompt


@pytest.fixture(scope="module")
def samples():
    return [make_sample(i, seed=9, size=64) for i in range(150)]


def test_spans_point_at_the_right_text(samples):
    for s in samples:
        text = s.caption.text
        for p in s.caption.grounding:
            noun = text[p.start : p.end]
            assert noun in category(p.category).forms or noun in ("mountains", "trees"), (text, noun)
            assert p.phrase_start <= p.start < p.end <= p.phrase_end
            assert text[p.phrase_start : p.phrase_end].endswith(noun) or p.kind == "stuff"


def test_spans_point_at_the_right_masks(samples):
    for s in samples:
        r = s.render
        for p, m in zip(s.caption.grounding, s.caption.masks(r.seg, r.instance), strict=True):
            assert m.any(), (s.caption.text, p)
            if p.kind == "thing":
                objs = {o.instance_id: o for o in r.scene.objects}
                assert all(objs[i].category == p.category for i in p.instance_ids)
                assert (r.seg[m] == p.category_id).all()
            else:
                assert (r.seg[m] == p.category_id).all()


def test_counts_and_every_instance_of_a_named_category(samples):
    words = {1: ("a", "an"), 2: ("two",), 3: ("three",), 4: ("four",), 5: ("five",), 6: ("six",)}
    for s in samples:
        for p in s.caption.grounding:
            if p.kind != "thing":
                continue
            same = [o.instance_id for o in s.render.scene.objects if o.category == p.category]
            visible = s.render.visible_fraction()
            assert set(p.instance_ids) == {i for i in same if visible[i] >= 0.2} or set(p.instance_ids) == set(same)
            first = s.caption.text[p.phrase_start : p.phrase_end].split()[0]
            assert first in words[min(len(p.instance_ids), 6)], s.caption.text


def test_captions_parse_back_with_no_unknown_words(samples):
    for s in samples:
        parsed = parse_prompt(s.caption.text)
        assert parsed.unknown == (), s.caption.text
        named = {p.category for p in s.caption.grounding if p.kind == "thing"}
        assert set(parsed.things) == named, s.caption.text


def test_captions_are_varied_and_often_partial(samples):
    texts = [s.caption.text for s in samples]
    assert len(set(texts)) == len(texts)
    partial = sum(
        {p.category for p in s.caption.grounding if p.kind == "thing"} != {o.category for o in s.render.scene.objects}
        for s in samples
    )
    assert 0.2 < partial / len(samples) < 0.8
    assert any(" to the left of " in t or " to the right of " in t for t in texts)
    assert any(" on the grass" in t or " in the snow" in t for t in texts)


def test_styles_are_named():
    names = {"night": "night", "grayscale": ("black and white", "grayscale"), "pencil sketch": "pencil",
             "pixel art": "pixel art"}  # fmt: skip
    for style, word in names.items():
        cfg = WorldConfig(styles=(style,))
        for seed in range(5):
            cap = make_caption(sample_scene(seed, cfg), np.random.default_rng(seed), cfg)
            assert any(w in cap.text for w in ((word,) if isinstance(word, str) else word)), cap.text


def test_caption_is_deterministic():
    a = make_sample(3, seed=1, size=64).caption
    b = make_sample(3, seed=1, size=64).caption
    assert a == b


def test_style_of_reads_every_caption_prefix_back():
    from fgdm.world.captions import _STYLE_PREFIX, style_of

    for style, prefixes in _STYLE_PREFIX.items():
        for prefix in prefixes:
            assert style_of(prefix + "a dog on the grass") == style, prefix
    assert style_of("A Black and White photo of a cat") == "grayscale"
    assert style_of("a photo of a hot dog, a cup, and a kite.") == "photo"

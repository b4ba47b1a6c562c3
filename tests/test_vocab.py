import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgdm.world.categories import THINGS
from fgdm.world.vocab import parse_prompt, prompt_categories

MULTIGEN = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "multigen_coco_5_1k.json"


def test_plurals_synonyms_multiword():
    p = parse_prompt("Two puppies, three wine glasses and a hot dog next to a sofa.")
    assert p.things == ("dog", "wine glass", "hot dog", "couch")
    assert {m.category: m.count for m in p.mentions} == {"dog": 2, "wine glass": 3, "hot dog": 1, "couch": 1}
    assert p.unknown == ()
    assert [p.text[m.start : m.end] for m in p.mentions] == ["puppies", "wine glasses", "hot dog", "sofa"]


def test_longest_match_wins():
    assert prompt_categories("a baseball bat and a baseball") == ("baseball bat", "sports ball")
    assert prompt_categories("a teddy bear") == ("teddy bear",)
    assert prompt_categories("a bear") == ("bear",)
    assert prompt_categories("a computer mouse and a mouse") == ("mouse",)


def test_units_and_irregular_plurals():
    p = parse_prompt("two pairs of skis, a pair of scissors, three people and two mice")
    assert {m.category: m.count for m in p.mentions} == {"skis": 2, "scissors": 1, "person": 3, "mouse": 2}


def test_unknown_words_are_reported_not_guessed():
    p = parse_prompt("a dragon flying over a castle with a dog")
    assert p.things == ("dog",)
    assert p.unknown == ("dragon", "castle")


def test_stuff_is_separate_from_things():
    p = parse_prompt("a cat on the grass under a blue sky")
    assert p.things == ("cat",) and p.stuff == ("grass", "sky")


def test_every_form_of_every_thing_parses_to_it():
    for c in THINGS:
        for form in c.forms:
            assert prompt_categories(f"a photo of {form}.") == (c.name,), form


def test_bad_input():
    with pytest.raises(ValueError, match="string"):
        parse_prompt(None)


@pytest.mark.skipif(not MULTIGEN.exists(), reason="shared benchmarks not present")
def test_official_multigen_prompts_parse_exactly():
    data = json.loads(MULTIGEN.read_text())
    for e in data:
        p = parse_prompt(e["text"])
        want = tuple(e[f"obj_{i}_attributes"][0] for i in range(1, 6))
        assert p.things == want, e["text"]
        assert p.unknown == (), e["text"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parser_never_crashes_and_spans_are_inside_the_text(text):
    p = parse_prompt(text)
    for m in p.mentions:
        assert 0 <= m.start < m.end <= len(text) and text[m.start : m.end] == m.text
    assert all(u in text for u in p.unknown)


def test_spans_survive_case_changes_that_change_length():
    t = "İİ a Dog"  # "İ".lower() is two characters long
    p = parse_prompt(t)
    assert p.things == ("dog",) and [t[m.start : m.end] for m in p.mentions] == ["Dog"]

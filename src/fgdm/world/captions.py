"""Captions with grounding: varied natural templates whose noun phrases are linked to masks.

Like real captions, a caption names all or only some of the objects, with counts ("two apples"),
sometimes a spatial relation ("a cat to the left of a dog"), the background ("on the grass") and
the style ("a pencil sketch of"). Every noun phrase carries its character span, category and the
instance ids it refers to (stuff phrases refer to a class region instead): what TokenCompose needs
in place of Grounded-SAM.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from .categories import category
from .scene import Scene, SceneObject, WorldConfig

_MASS_NOUNS = {"luggage", "cattle"}  # accepted in prompts, never counted in captions
_NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six"]


@dataclass(frozen=True)
class Phrase:
    """One grounded noun phrase: ``caption[start:end]`` is the noun ("dogs", "wine glass"),
    ``caption[phrase_start:phrase_end]`` the whole phrase ("two dogs")."""

    start: int
    end: int
    phrase_start: int
    phrase_end: int
    category: str
    category_id: int
    instance_ids: tuple[int, ...]  # empty for stuff
    kind: str  # "thing" | "stuff"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["instance_ids"] = list(self.instance_ids)
        return d


@dataclass(frozen=True)
class Caption:
    text: str
    grounding: tuple[Phrase, ...]

    def masks(self, seg: np.ndarray, instance: np.ndarray) -> list[np.ndarray]:
        """One boolean mask per grounded phrase (instances for things, the class region for stuff)."""
        out = []
        for p in self.grounding:
            if p.kind == "thing":
                out.append(np.isin(instance, p.instance_ids))
            else:
                out.append(seg == p.category_id)
        return out


class _Builder:
    """Appends text and records the spans of grounded phrases as it goes."""

    def __init__(self) -> None:
        self.text = ""
        self.phrases: list[Phrase] = []

    def add(self, s: str) -> None:
        self.text += s

    def noun(self, before: str, noun: str, cat: str, ids: tuple[int, ...], after: str = "") -> None:
        p0 = len(self.text)
        self.text += before
        n0 = len(self.text)
        self.text += noun
        n1 = len(self.text)
        self.text += after
        c = category(cat)
        self.phrases.append(Phrase(n0, n1, p0, len(self.text), c.name, c.id, ids, c.kind))


def article(word: str) -> str:
    """The indefinite article for ``word``, with its space: "an " before a vowel, else "a "."""
    return "an " if word[0] in "aeiou" else "a "


def _thing_phrase(b: _Builder, rng: np.random.Generator, cat: str, ids: tuple[int, ...]) -> None:
    c = category(cat)
    k = len(ids)
    forms = [(c.singular, c.plural)]
    if c.synonyms and rng.random() < 0.25:
        forms += [f for f in c.synonyms if f[0] not in _MASS_NOUNS]
    sing, plur = forms[rng.integers(len(forms))]
    if c.unit is not None and sing == c.singular:
        unit = c.unit[0] if k == 1 else c.unit[1]
        count = article(unit) if k == 1 else _NUM_WORDS[min(k, 6)] + " "
        b.noun(f"{count}{unit} of ", plur, cat, ids)
    elif k == 1:
        b.noun(article(sing), sing, cat, ids)
    else:
        count = _NUM_WORDS[k] if k <= 6 else "many"
        b.noun(count + " ", plur, cat, ids)


def _list(b: _Builder, rng: np.random.Generator, groups: list[tuple[str, tuple[int, ...]]]) -> None:
    for i, (cat, ids) in enumerate(groups):
        if i:
            last = i == len(groups) - 1
            b.add((", and " if rng.random() < 0.3 and len(groups) > 2 else " and ") if last else ", ")
        _thing_phrase(b, rng, cat, ids)


# background phrases per scene kind: (text before the noun, noun, stuff class, text after)
_BACKGROUND = {
    "field": [(" on the ", "grass", "grass", ""), (" in a ", "field", "grass", ""), (" on a ", "meadow", "grass", "")],
    "street": [(" on the ", "street", "road", ""), (" on the ", "road", "road", "")],
    "beach": [(" on the ", "beach", "sand", ""), (" by the ", "sea", "water", "")],
    "lake": [(" on the ", "water", "water", ""), (" on a ", "lake", "water", "")],
    "snow": [(" in the ", "snow", "snow", "")],
    "room": [(" in front of a ", "wall", "wall", ""), (" on the ", "floor", "floor", "")],
}
_EXTRA = {
    "sky": (" under a blue ", "sky", ""),
    "mountain": (" with ", "mountains", " in the background"),
    "tree": (" in front of ", "trees", ""),
}
_SCENE_NOUN = {  # "a beach with ..."
    "field": [("a grassy ", "field", "grass"), ("a ", "meadow", "grass")],
    "street": [("a ", "street", "road")],
    "beach": [("a ", "beach", "sand")],
    "lake": [("a ", "lake", "water")],
    "snow": [("a snowy landscape", None, None)],
    "room": [("a room", None, None), ("a living room", None, None)],
}
_STYLE_PREFIX = {
    "photo": ["", "", "a photo of ", "an image of ", "a picture of "],
    "night": ["a night photo of ", "a photo at night of "],
    "grayscale": ["a black and white photo of ", "a grayscale photo of "],
    "pencil sketch": ["a pencil sketch of ", "a pencil drawing of "],
    "pixel art": ["pixel art of ", "a pixel art image of "],
}

# words by which a caption (or a prompt) names a non-photo style: every styled caption has one
_STYLE_WORDS = {
    "night": re.compile(r"\bnight\b"),
    "grayscale": re.compile(r"\b(black and white|gr[ae]yscale)\b"),
    "pencil sketch": re.compile(r"\b(pencil|sketch|drawing)\b"),
    "pixel art": re.compile(r"\bpixel art\b"),
}


def style_of(text: str) -> str:
    """The world style a caption or prompt names ("a night photo of a dog" -> "night"), or
    "photo" when it names none, as the plain style's captions never do."""
    low = text.lower()
    for style, pattern in _STYLE_WORDS.items():
        if pattern.search(low):
            return style
    return "photo"


def _relation(a: SceneObject, b: SceneObject, ea: tuple[float, float], eb: tuple[float, float]) -> str | None:
    """Spatial relation of ``a`` to ``b`` from their positions, or None if none is clear."""
    dx = a.cx - b.cx
    if abs(dx) > 0.5 * (ea[0] + eb[0]) * 0.8:
        return "to the left of" if dx < 0 else "to the right of"
    a_mid, b_mid = a.base_y - ea[1] / 2, b.base_y - eb[1] / 2
    if abs(a_mid - b_mid) > 0.5 * (ea[1] + eb[1]):
        return "above" if a_mid < b_mid else "below"
    if a.depth < 0.75 * b.depth:
        return "in front of"
    if b.depth < 0.75 * a.depth:
        return "behind"
    return "next to"


def make_caption(
    scene: Scene, rng: np.random.Generator, config: WorldConfig | None = None, visible: dict[int, float] | None = None
) -> Caption:
    """A grounded caption for ``scene``. Objects less than 20% visible are never named."""
    cfg = config or WorldConfig()
    objs = [o for o in scene.objects if visible is None or visible.get(o.instance_id, 1.0) >= 0.2] or list(
        scene.objects
    )
    groups: dict[str, list[SceneObject]] = {}
    for o in objs:
        groups.setdefault(o.category, []).append(o)
    names = list(groups)
    rng.shuffle(names)
    if len(names) > 1 and rng.random() >= cfg.mention_all_prob:
        names = names[: int(rng.integers(1, len(names)))]
    chosen = [(n, tuple(o.instance_id for o in groups[n])) for n in names]

    b = _Builder()
    prefixes = _STYLE_PREFIX[scene.style]
    b.add(prefixes[rng.integers(len(prefixes))])
    singles = [(n, ids) for n, ids in chosen if len(ids) == 1]
    form = rng.random()
    stuff_present = {bd.stuff for bd in scene.bands}
    if len(singles) >= 2 and form < cfg.relation_prob:
        (na, (ia,)), (nb, (ib,)) = singles[:2]
        oa = next(o for o in objs if o.instance_id == ia)
        ob = next(o for o in objs if o.instance_id == ib)
        rel = _relation(oa, ob, oa.extent(), ob.extent())
        _thing_phrase(b, rng, na, (ia,))
        b.add(f" {rel} ")
        _thing_phrase(b, rng, nb, (ib,))
        rest = [g for g in chosen if g[0] not in (na, nb)]
        if rest:
            b.add(", with ")
            _list(b, rng, rest)
    elif form < cfg.relation_prob + 0.2 and _SCENE_NOUN[scene.kind]:
        opts = [o for o in _SCENE_NOUN[scene.kind] if o[2] is None or o[2] in stuff_present]
        before, noun, stuff = opts[rng.integers(len(opts))]
        if noun is None:
            b.add(before)
        else:
            b.noun(before, noun, stuff, ())
        b.add(" with ")
        _list(b, rng, chosen)
        return Caption(b.text + ".", tuple(b.phrases))
    else:
        if not b.text and rng.random() < 0.3:
            b.add("there " + ("is " if len(chosen[0][1]) == 1 else "are "))
        _list(b, rng, chosen)
    if rng.random() < cfg.background_prob:
        opts = [o for o in _BACKGROUND[scene.kind] if o[2] in stuff_present]
        before, noun, stuff, after = opts[rng.integers(len(opts))]
        b.noun(before, noun, stuff, (), after)
        extra = [k for k in _EXTRA if k in stuff_present]
        if extra and rng.random() < 0.3:
            k = extra[rng.integers(len(extra))]
            before, noun, after = _EXTRA[k]
            b.noun(before, noun, k, (), after)
    return Caption(b.text + ".", tuple(b.phrases))

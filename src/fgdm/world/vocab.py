"""Prompt text -> categories: plurals, synonyms, multi-word names, counts; unknown words reported.

The parser never guesses: a word that is neither a category form nor one of the function, count,
relation, style, scene or colour words below is returned in ``ParsedPrompt.unknown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from .categories import CATEGORIES, Category

NUMBERS = {
    "a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "couple": 2, "pair": 2, "several": 3, "many": 3,
    "some": 2, "few": 2, "multiple": 2, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "7": 7, "8": 8,
    "9": 9, "10": 10,
}  # fmt: skip
UNITS = {"pair", "pairs", "set", "sets", "group", "groups", "bunch", "herd", "flock"}
FUNCTION_WORDS = set(
    """
    the of and with in on at by to from into onto near next beside besides behind front left right
    above below under over top bottom middle center centre between among around there is are was
    were it its their this that these those has have having sitting standing lying flying floating
    parked placed resting side background foreground far close up along across while also as or its
    both each other another together alone scene view picture photo photograph image shot rendering
    render drawing illustration art style sketch pencil pixel night black white grayscale greyscale
    monochrome dark evening day daytime sunny cloudy outdoor outdoors indoor indoors room living
    kitchen bedroom landscape snowy grassy sandy green blue red yellow purple pink brown gray grey
    colorful colourful small large big little tiny huge tall short old new wooden shown seen visible
    someone something
    """.split()
)
_WORD = re.compile(r"[a-z0-9]+", re.IGNORECASE)  # matched on the original text, so spans index it


@dataclass(frozen=True)
class Mention:
    category: str
    start: int  # character span of the noun in the prompt
    end: int
    count: int | None  # from a preceding number/article; None if none was given
    text: str


@dataclass(frozen=True)
class ParsedPrompt:
    text: str
    mentions: tuple[Mention, ...]
    unknown: tuple[str, ...] = field(default=())

    @property
    def things(self) -> tuple[str, ...]:
        """Thing categories named, in order of first mention, without repeats."""
        return _unique(m.category for m in self.mentions if _is_thing(m.category))

    @property
    def stuff(self) -> tuple[str, ...]:
        return _unique(m.category for m in self.mentions if not _is_thing(m.category))


def _unique(items) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return tuple(seen)


@cache
def _kinds() -> dict[str, bool]:
    return {c.name: c.is_thing for c in CATEGORIES}


def _is_thing(name: str) -> bool:
    return _kinds()[name]


@cache
def phrase_table() -> dict[tuple[str, ...], Category]:
    """Every accepted form (as a word tuple) -> its category. Thing forms win over stuff forms."""
    table: dict[tuple[str, ...], Category] = {}
    for c in sorted(CATEGORIES, key=lambda c: c.is_thing):  # things last, so they override
        for form in c.forms:
            table[tuple(_WORD.findall(form.lower()))] = c
    return table


@cache
def _max_len() -> int:
    return max(len(k) for k in phrase_table())


def parse_prompt(text: str) -> ParsedPrompt:
    """Find the categories a prompt names (longest match first: "hot dog", "wine glasses")."""
    if not isinstance(text, str):
        raise ValueError(f"prompt must be a string, got {type(text).__name__}")
    toks = [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(text)]
    table = phrase_table()
    mentions, unknown = [], []
    i = 0
    while i < len(toks):
        for n in range(min(_max_len(), len(toks) - i), 0, -1):
            key = tuple(t[0] for t in toks[i : i + n])
            if key in table:
                start, end = toks[i][1], toks[i + n - 1][2]
                mentions.append(Mention(table[key].name, start, end, _count_before(toks, i), text[start:end]))
                i += n
                break
        else:
            w = toks[i][0]
            if w not in NUMBERS and w not in UNITS and w not in FUNCTION_WORDS:
                unknown.append(text[toks[i][1] : toks[i][2]])
            i += 1
    return ParsedPrompt(text, tuple(mentions), tuple(unknown))


def _count_before(toks: list[tuple[str, int, int]], i: int) -> int | None:
    """The count a noun at token ``i`` is given: "two dogs", "a pair of skis", "three pairs of skis"."""
    j = i - 1
    if j >= 1 and toks[j][0] == "of" and toks[j - 1][0] in UNITS:
        j -= 2
        if j >= 0 and toks[j][0] in NUMBERS:
            return NUMBERS[toks[j][0]]
        return 1
    if j >= 0 and toks[j][0] in NUMBERS:
        return NUMBERS[toks[j][0]]
    return None


def prompt_categories(text: str) -> tuple[str, ...]:
    """Thing categories named by a prompt (the set object recall is computed against)."""
    return parse_prompt(text).things

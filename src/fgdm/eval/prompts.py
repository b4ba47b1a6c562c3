"""Prompt sets made by our own code, with the published recipes, and the MultiGen list format.

- MultiGen (TokenCompose): "a photo of a A, a B, a C, a D, and a E." from 5 distinct random
  categories (the official list's exact template, article included).
- Relations (VISOR-style): "a A to the left of a B" with left/right/above/below.
- Dense scenes (SBPC, FG-DM Tables 3-4): 6-8 distinct categories in a natural sentence.
- Single objects ("a photo of a dog": every category equally often) and pairs ("a photo of a dog
  and a cat"): the base model's basic presence rates (MiniSD's quality targets).
- Captions: the world's own captions of scenes ``0..n-1`` of world seed ``seed`` (the training
  distribution's prompts, e.g. to generate a labelled dataset with FG-DM); objects = the
  categories the caption names.

Every set is a pure function of (recipe, n, seed); the versioned files under ``prompts/`` record
both and a test regenerates them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..world.captions import article
from ..world.categories import THINGS, category, resolve_categories

RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


@dataclass(frozen=True)
class PromptEntry:
    text: str
    objects: tuple[str, ...]  # categories, in prompt order
    relation: str | None = None  # for relation prompts: left | right | above | below (objects[0] REL objects[1])


def _pick(rng: np.random.Generator, k: int) -> list[str]:
    return [THINGS[i].name for i in rng.choice(len(THINGS), size=k, replace=False)]


def multigen_prompts(n: int = 1000, k: int = 5, seed: int = 0) -> list[PromptEntry]:
    """MultiGen-style prompts: ``k`` distinct categories, the official template."""
    if not 2 <= k <= len(THINGS) or n < 1:
        raise ValueError(f"need n >= 1 and 2 <= k <= {len(THINGS)}, got n={n}, k={k}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        objs = _pick(rng, k)
        text = "a photo of " + ", ".join(f"a {o}" for o in objs[:-1]) + f", and a {objs[-1]}."
        out.append(PromptEntry(text, tuple(objs)))
    return out


def with_article(word: str) -> str:
    return article(word) + word


def relation_prompts(n: int = 500, seed: int = 0) -> list[PromptEntry]:
    """Two distinct categories and a spatial relation: "a dog to the left of a cat"."""
    rng = np.random.default_rng(seed)
    keys = list(RELATIONS)
    out = []
    for _ in range(n):
        a, b = _pick(rng, 2)
        rel = keys[rng.integers(len(keys))]
        out.append(PromptEntry(f"{with_article(a)} {RELATIONS[rel]} {with_article(b)}", (a, b), rel))
    return out


def dense_prompts(n: int = 200, seed: int = 0, min_k: int = 6, max_k: int = 8) -> list[PromptEntry]:
    """Dense scene prompts of ``min_k``-``max_k`` distinct categories (the SBPC benchmark)."""
    rng = np.random.default_rng(seed)
    lead = ["a photo of", "a scene with", "an image of"]
    out = []
    for _ in range(n):
        objs = _pick(rng, int(rng.integers(min_k, max_k + 1)))
        text = f"{lead[rng.integers(len(lead))]} " + ", ".join(with_article(o) for o in objs[:-1]) + f" and {with_article(objs[-1])}."
        out.append(PromptEntry(text, tuple(objs)))
    return out


def single_prompts(n: int = 400, seed: int = 0) -> list[PromptEntry]:
    """"a photo of a X", the categories in seeded random order, each ``n // 80`` or one more times."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        for i in rng.permutation(len(THINGS))[: n - len(out)]:
            name = THINGS[i].name
            out.append(PromptEntry(f"a photo of {with_article(name)}", (name,)))
    return out


def pair_prompts(n: int = 500, seed: int = 0) -> list[PromptEntry]:
    """"a photo of a A and a B" with two distinct categories."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = _pick(rng, 2)
        out.append(PromptEntry(f"a photo of {with_article(a)} and {with_article(b)}", (a, b)))
    return out


def caption_prompts(n: int = 1000, seed: int = 3) -> list[PromptEntry]:
    """SceneWorld captions of scenes ``0..n-1`` with world seed ``seed`` (use a seed no model trained on)."""
    from ..world.dataset import make_sample

    out = []
    for i in range(n):
        cap = make_sample(i, seed=seed, size=64).caption
        names = tuple(dict.fromkeys(g.category for g in cap.grounding if category(g.category).is_thing))
        out.append(PromptEntry(cap.text, names))
    return out


def to_multigen_json(entries: list[PromptEntry]) -> list[dict]:
    """The official MultiGen list format (plus 'relation' where there is one)."""
    rows = []
    for i, e in enumerate(entries):
        row = {"unique_id": i, "num_objects": len(e.objects)}
        for j, o in enumerate(e.objects, 1):
            row[f"obj_{j}_attributes"] = [o]
        row["text"] = e.text
        if e.relation:
            row["relation"] = e.relation
        rows.append(row)
    return rows


REFERENCE_NEEDS_OBJECTS = ("reference 'prompts' renders each prompt's objects", " (use reference 'world')")


def prompt_entries(prompts: list[str] | list[PromptEntry], *,
                   need_objects: tuple[str, str] | None = REFERENCE_NEEDS_OBJECTS) -> list[PromptEntry]:  # fmt: skip
    """Prompts as entries (objects parsed by the vocabulary where only text is given). With
    ``need_objects`` = (why, hint), every prompt must name an object, or the error says why (e.g.
    renders of the prompts are to be drawn) and what to do instead."""
    from ..world.vocab import parse_prompt

    entries = [e if isinstance(e, PromptEntry) else PromptEntry(e, parse_prompt(e).things) for e in prompts]
    empty = [e.text for e in entries if not e.objects]
    if need_objects and empty:
        why, hint = need_objects
        raise ValueError(f"{why}; {len(empty)} prompt(s) name none, e.g. {empty[0]!r}{hint}")
    return entries


def load_prompt_entries(path: str | Path, arg: str = "prompts") -> list[PromptEntry]:
    """Entries from the MultiGen JSON format (objects from ``obj_i_attributes``) or a text file
    (objects parsed from each prompt by the vocabulary)."""
    from ..world.prompts import read_prompts
    from ..world.vocab import parse_prompt

    p = Path(path)
    texts = read_prompts(p, arg)
    data = json.loads(p.read_text()) if p.suffix.lower() == ".json" or p.read_text().lstrip().startswith("[") else None
    out = []
    for i, text in enumerate(texts):
        row = data[i] if data is not None and isinstance(data[i], dict) else None
        if row is not None and "obj_1_attributes" in row:
            names = [row[f"obj_{j}_attributes"][0] for j in range(1, 100) if f"obj_{j}_attributes" in row]
            try:
                objs = tuple(c.name for c in resolve_categories(names))
            except ValueError as e:
                raise ValueError(f"{arg} file {str(path)!r}, entry {i}: {e}") from None
            out.append(PromptEntry(text, objs, row.get("relation")))
        else:
            out.append(PromptEntry(text, parse_prompt(text).things))
    return out


RECIPES = {
    "multigen": lambda n, seed: multigen_prompts(n, 5, seed),
    "relations": relation_prompts,
    "dense": dense_prompts,
    "single": single_prompts,
    "pairs": pair_prompts,
    "captions": caption_prompts,
}

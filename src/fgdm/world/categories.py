"""The SceneWorld category table: the 80 COCO thing categories and the stuff classes.

Class ids are contiguous: things 0-79 in the standard COCO order (the order of the COCO
detection "categories" list with its gaps removed), stuff 80-89. ``VOID_ID`` (255) marks pixels a
decoder could not assign. The ids, names and palette are part of the on-disk format of every
condition map the project writes: never reorder them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VOID_ID = 255

# Scene kinds the sampler knows (see scene.py); categories list the kinds they are most often seen in.
SCENE_KINDS = ("field", "street", "beach", "lake", "snow", "room")
_OUT = ("field", "street", "beach", "lake", "snow")  # any outdoor scene
_LAND = ("field", "street", "snow")


@dataclass(frozen=True)
class Category:
    """One class of the world.

    Attributes:
        id: contiguous class id (things 0-79, stuff 80+).
        name: the COCO name (what MultiGen prompts use).
        kind: "thing" or "stuff".
        singular / plural: the forms captions use for it.
        synonyms: other (singular, plural) forms the vocabulary accepts and captions sometimes use.
        glyphs: colour-emoji strings its sprites are rendered from.
        drawn: names of procedural sprites (see sprites_drawn.py) for it.
        size: apparent size relative to the largest things (0.5-1.0): the max side, as a fraction
            of the image, of an instance standing at the bottom edge is ``0.6 * size``.
        context: scene kinds it is most often placed in (it may appear in any).
        flies: may be placed in the sky instead of on the ground.
        unit: counted with a unit ("a pair of skis"), as (singular unit, plural unit).
    """

    id: int
    name: str
    kind: str
    singular: str
    plural: str
    synonyms: tuple[tuple[str, str], ...] = ()
    glyphs: tuple[str, ...] = ()
    drawn: tuple[str, ...] = ()
    size: float = 0.6
    context: tuple[str, ...] = _OUT
    flies: bool = False
    unit: tuple[str, str] | None = None
    forms: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        forms = {self.name, self.singular, self.plural}
        for s, p in self.synonyms:
            forms.update((s, p))
        object.__setattr__(self, "forms", tuple(sorted(forms)))

    @property
    def is_thing(self) -> bool:
        return self.kind == "thing"


def _syn(*words: str) -> tuple[tuple[str, str], ...]:
    """Synonyms given as "singular/plural" or a regular noun ("puppy" -> "puppies")."""
    out = []
    for w in words:
        if "/" in w:
            s, p = w.split("/")
        elif w.endswith("y") and w[-2] not in "aeiou":
            s, p = w, w[:-1] + "ies"
        elif w.endswith(("s", "sh", "ch", "x")):
            s, p = w, w + "es"
        else:
            s, p = w, w + "s"
        out.append((s, p))
    return tuple(out)


_INDOOR = ("room",)
_T = "thing"

# fmt: off
_THINGS: list[dict] = [
    dict(name="person", plural="people", synonyms=_syn("man/men", "woman/women", "child/children", "boy", "girl", "pedestrian", "persons/persons"), glyphs=("🧍", "🚶", "🏃", "🕺", "💃"), size=0.8, context=SCENE_KINDS),
    dict(name="bicycle", synonyms=_syn("bike"), glyphs=("🚲",), size=0.65, context=("street", "field")),
    dict(name="car", synonyms=_syn("automobile", "taxi"), glyphs=("🚗", "🚙", "🚕", "🚓", "🏎"), size=0.75, context=("street",)),
    dict(name="motorcycle", synonyms=_syn("motorbike", "scooter"), glyphs=("🏍", "🛵"), size=0.65, context=("street",)),
    dict(name="airplane", synonyms=_syn("plane", "aeroplane", "jet"), glyphs=("✈", "🛩"), size=0.9, context=("field", "street"), flies=True),
    dict(name="bus", plural="buses", glyphs=("🚌", "🚍", "🚎"), size=1.0, context=("street",)),
    dict(name="train", synonyms=_syn("locomotive"), glyphs=("🚆", "🚂", "🚄", "🚃"), size=1.0, context=("field", "street")),
    dict(name="truck", synonyms=_syn("lorry/lorries", "pickup"), glyphs=("🚚", "🚛", "🛻"), size=0.9, context=("street",)),
    dict(name="boat", synonyms=_syn("sailboat", "ship", "canoe"), glyphs=("⛵", "🚤", "🛥", "⛴", "🛶"), size=0.85, context=("lake", "beach")),
    dict(name="traffic light", synonyms=_syn("stoplight", "traffic signal"), glyphs=("🚦", "🚥"), size=0.6, context=("street",)),
    dict(name="fire hydrant", synonyms=_syn("hydrant"), drawn=("fire_hydrant", "fire_hydrant_yellow"), size=0.55, context=("street",)),
    dict(name="stop sign", glyphs=("🛑",), drawn=("stop_sign",), size=0.6, context=("street",)),
    dict(name="parking meter", drawn=("parking_meter", "parking_meter_double"), size=0.6, context=("street",)),
    dict(name="bench", plural="benches", drawn=("bench_wood", "bench_park"), size=0.7, context=("field", "street")),
    dict(name="bird", synonyms=_syn("duck", "parrot", "pigeon", "penguin"), glyphs=("🐦", "🐤", "🦜", "🐧", "🕊", "🦅", "🦆"), size=0.5, context=_OUT, flies=True),
    dict(name="cat", synonyms=_syn("kitten", "kitty"), glyphs=("🐈", "🐱"), size=0.55, context=("room", "field", "street")),
    dict(name="dog", synonyms=_syn("puppy", "pup"), glyphs=("🐕", "🐶", "🐩", "🦮"), size=0.6, context=("field", "street", "room", "beach", "snow")),
    dict(name="horse", synonyms=_syn("pony"), glyphs=("🐎", "🐴"), size=0.85, context=("field", "snow", "beach")),
    dict(name="sheep", plural="sheep", synonyms=_syn("lamb", "ram"), glyphs=("🐑", "🐏"), size=0.65, context=("field", "snow")),
    dict(name="cow", synonyms=_syn("cattle/cattle", "bull", "calf/calves"), glyphs=("🐄", "🐮", "🐂"), size=0.8, context=("field",)),
    dict(name="elephant", glyphs=("🐘",), size=1.0, context=("field", "beach", "lake")),
    dict(name="bear", synonyms=_syn("grizzly/grizzlies"), glyphs=("🐻",), size=0.85, context=("field", "snow", "lake")),
    dict(name="zebra", glyphs=("🦓",), size=0.85, context=("field",)),
    dict(name="giraffe", glyphs=("🦒",), size=1.0, context=("field",)),
    dict(name="backpack", synonyms=_syn("rucksack", "knapsack"), glyphs=("🎒",), size=0.5, context=("street", "room", "snow")),
    dict(name="umbrella", synonyms=_syn("parasol"), glyphs=("☂", "🌂", "☔"), size=0.7, context=("beach", "street")),
    dict(name="handbag", synonyms=_syn("purse", "bag"), glyphs=("👜", "👛"), size=0.5, context=("street", "room")),
    dict(name="tie", synonyms=_syn("necktie"), glyphs=("👔",), drawn=("tie",), size=0.5, context=("room",)),
    dict(name="suitcase", synonyms=_syn("luggage/luggage", "briefcase"), glyphs=("🧳", "💼"), size=0.55, context=("street", "room")),
    dict(name="frisbee", synonyms=_syn("flying disc"), glyphs=("🥏",), size=0.5, context=("field", "beach"), flies=True),
    dict(name="skis", singular="skis", plural="skis", synonyms=_syn("ski"), drawn=("skis", "skis_red"), size=0.7, context=("snow",), unit=("pair", "pairs")),
    dict(name="snowboard", drawn=("snowboard", "snowboard_green"), size=0.65, context=("snow",)),
    dict(name="sports ball", synonyms=_syn("ball", "soccer ball", "football", "basketball", "baseball", "tennis ball", "volleyball"), glyphs=("⚽", "🏀", "🏈", "⚾", "🎾", "🏐"), size=0.5, context=("field", "beach", "street")),
    dict(name="kite", glyphs=("🪁",), size=0.6, context=("field", "beach"), flies=True),
    dict(name="baseball bat", synonyms=_syn("bat"), drawn=("baseball_bat", "baseball_bat_metal"), size=0.6, context=("field",)),
    dict(name="baseball glove", synonyms=_syn("mitt", "glove"), drawn=("baseball_glove",), glyphs=("🧤",), size=0.5, context=("field",)),
    dict(name="skateboard", glyphs=("🛹",), size=0.55, context=("street",)),
    dict(name="surfboard", drawn=("surfboard", "surfboard_blue"), size=0.75, context=("beach", "lake")),
    dict(name="tennis racket", synonyms=_syn("racket", "racquet"), drawn=("tennis_racket", "tennis_racket_red"), glyphs=("🏸",), size=0.6, context=("field", "street")),
    dict(name="bottle", synonyms=_syn("wine bottle"), glyphs=("🍾", "🍼", "🧴"), size=0.5, context=("room", "beach")),
    dict(name="wine glass", plural="wine glasses", synonyms=_syn("glass/glasses"), glyphs=("🍷", "🥂"), size=0.5, context=("room",)),
    dict(name="cup", synonyms=_syn("mug", "coffee cup"), glyphs=("☕", "🥤", "🍵", "🥛", "🧋"), size=0.5, context=("room",)),
    dict(name="fork", drawn=("fork",), size=0.5, context=("room",)),
    dict(name="knife", plural="knives", glyphs=("🔪", "🗡"), size=0.5, context=("room",)),
    dict(name="spoon", glyphs=("🥄",), size=0.5, context=("room",)),
    dict(name="bowl", synonyms=_syn("soup bowl"), glyphs=("🥣", "🍜", "🍲"), size=0.5, context=("room",)),
    dict(name="banana", glyphs=("🍌",), size=0.5, context=("room", "beach")),
    dict(name="apple", glyphs=("🍎", "🍏"), size=0.5, context=("room", "field")),
    dict(name="sandwich", plural="sandwiches", glyphs=("🥪",), size=0.5, context=("room",)),
    dict(name="orange", glyphs=("🍊",), size=0.5, context=("room",)),
    dict(name="broccoli", plural="broccoli", glyphs=("🥦",), size=0.5, context=("room",)),
    dict(name="carrot", glyphs=("🥕",), size=0.5, context=("room", "field")),
    dict(name="hot dog", synonyms=_syn("hotdog"), glyphs=("🌭",), size=0.5, context=("room", "street")),
    dict(name="pizza", glyphs=("🍕",), size=0.5, context=("room",)),
    dict(name="donut", synonyms=_syn("doughnut"), glyphs=("🍩",), size=0.5, context=("room",)),
    dict(name="cake", synonyms=_syn("cupcake"), glyphs=("🍰", "🎂", "🧁"), size=0.5, context=("room",)),
    dict(name="chair", glyphs=("🪑",), drawn=("chair",), size=0.65, context=("room", "beach")),
    dict(name="couch", plural="couches", synonyms=_syn("sofa"), glyphs=("🛋",), size=0.85, context=("room",)),
    dict(name="potted plant", synonyms=_syn("plant", "houseplant"), glyphs=("🪴",), size=0.6, context=("room", "street")),
    dict(name="bed", glyphs=("🛏",), size=0.9, context=("room",)),
    dict(name="dining table", synonyms=_syn("table"), drawn=("dining_table", "dining_table_round"), size=0.85, context=("room",)),
    dict(name="toilet", glyphs=("🚽",), size=0.6, context=("room",)),
    dict(name="tv", singular="tv", plural="tvs", synonyms=_syn("television", "tv monitor", "monitor", "screen"), glyphs=("📺",), drawn=("tv_flat",), size=0.65, context=("room",)),
    dict(name="laptop", synonyms=_syn("notebook computer", "computer"), glyphs=("💻",), size=0.55, context=("room",)),
    dict(name="mouse", plural="mice", synonyms=_syn("computer mouse/computer mice"), glyphs=("🖱",), size=0.5, context=("room",)),
    dict(name="remote", synonyms=_syn("remote control", "controller"), drawn=("remote", "remote_silver"), size=0.5, context=("room",)),
    dict(name="keyboard", glyphs=("⌨",), size=0.55, context=("room",)),
    dict(name="cell phone", synonyms=_syn("phone", "cellphone", "mobile phone", "smartphone"), glyphs=("📱",), size=0.5, context=("room", "street")),
    dict(name="microwave", synonyms=_syn("microwave oven"), drawn=("microwave", "microwave_white"), size=0.6, context=("room",)),
    dict(name="oven", synonyms=_syn("stove"), drawn=("oven", "oven_steel"), size=0.75, context=("room",)),
    dict(name="toaster", drawn=("toaster", "toaster_red"), size=0.5, context=("room",)),
    dict(name="sink", drawn=("sink", "sink_cabinet"), size=0.65, context=("room",)),
    dict(name="refrigerator", synonyms=_syn("fridge"), drawn=("refrigerator", "refrigerator_steel"), size=0.95, context=("room",)),
    dict(name="book", synonyms=_syn("novel"), glyphs=("📕", "📗", "📘", "📙", "📖", "📚"), size=0.5, context=("room",)),
    dict(name="clock", glyphs=("🕰", "⏰"), drawn=("wall_clock",), size=0.5, context=("room", "street")),
    dict(name="vase", glyphs=("🏺",), drawn=("vase", "vase_flowers"), size=0.55, context=("room",)),
    dict(name="scissors", singular="scissors", plural="scissors", glyphs=("✂",), size=0.5, context=("room",), unit=("pair", "pairs")),
    dict(name="teddy bear", synonyms=_syn("teddy/teddies", "stuffed animal", "plush toy"), glyphs=("🧸",), size=0.55, context=("room",)),
    dict(name="hair drier", synonyms=_syn("hair dryer", "hairdryer", "blow dryer", "blow drier"), drawn=("hair_drier", "hair_drier_pink"), size=0.5, context=("room",)),
    dict(name="toothbrush", plural="toothbrushes", glyphs=("🪥",), size=0.5, context=("room",)),
]

_STUFF: list[dict] = [
    dict(name="sky", plural="skies", synonyms=_syn("blue sky/blue skies")),
    dict(name="tree", synonyms=_syn("forest", "woods/woods", "trees/trees")),
    dict(name="mountain", synonyms=_syn("hill", "mountains/mountains")),
    dict(name="grass", plural="grass", synonyms=_syn("field", "meadow", "lawn", "grassland")),
    dict(name="sand", plural="sand", synonyms=_syn("beach/beaches")),
    dict(name="snow", plural="snow", synonyms=_syn("snowfield")),
    dict(name="water", plural="water", synonyms=_syn("lake", "sea", "ocean", "river")),
    dict(name="road", synonyms=_syn("street", "asphalt")),
    dict(name="wall", synonyms=_syn("wallpaper")),
    dict(name="floor", synonyms=_syn("carpet", "tiles/tiles", "floorboards/floorboards")),
]
# fmt: on


def _regular_plural(word: str) -> str:
    return _syn(word)[0][1]


def _build() -> tuple[Category, ...]:
    cats = []
    for i, spec in enumerate(_THINGS):
        spec = dict(spec)
        spec.setdefault("singular", spec["name"])
        spec.setdefault("plural", _regular_plural(spec["singular"]))
        cats.append(Category(id=i, kind=_T, **spec))
    for j, spec in enumerate(_STUFF):
        spec = dict(spec)
        spec.setdefault("singular", spec["name"])
        spec.setdefault("plural", _regular_plural(spec["singular"]))
        cats.append(Category(id=len(_THINGS) + j, kind="stuff", size=1.0, context=(), **spec))
    return tuple(cats)


CATEGORIES: tuple[Category, ...] = _build()
THINGS: tuple[Category, ...] = tuple(c for c in CATEGORIES if c.is_thing)
STUFF: tuple[Category, ...] = tuple(c for c in CATEGORIES if not c.is_thing)
NUM_CLASSES = len(CATEGORIES)
_BY_NAME = {c.name: c for c in CATEGORIES}


def category(key: str | int) -> Category:
    """Look a category up by COCO name or id; raises ValueError naming the key if unknown."""
    if isinstance(key, int) and not isinstance(key, bool):
        if 0 <= key < NUM_CLASSES:
            return CATEGORIES[key]
        raise ValueError(f"category id {key!r} is out of range 0-{NUM_CLASSES - 1}")
    if isinstance(key, str) and key in _BY_NAME:
        return _BY_NAME[key]
    raise ValueError(f"unknown category {key!r}; `fgdm world categories` lists them")


def resolve_categories(names: list[str] | tuple[str, ...] | None) -> tuple[Category, ...]:
    """Resolve a list of thing-category names (COCO names or any accepted form).

    Raises ValueError naming every unknown entry.
    """
    if names is None:
        return THINGS
    by_form = {f: c for c in THINGS for f in c.forms}
    out, unknown = [], []
    for n in names:
        key = n.strip().lower()
        if key in by_form:
            if by_form[key] not in out:
                out.append(by_form[key])
        else:
            unknown.append(n)
    if unknown:
        raise ValueError(f"unknown categories {unknown!r} in categories; `fgdm world categories` lists them")
    if not out:
        raise ValueError("categories is empty: name at least one thing category")
    return tuple(out)

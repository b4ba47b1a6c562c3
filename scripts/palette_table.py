"""Print the class table (id, name, kind, palette colour, sprites) as markdown for docs/world.md."""

from fgdm.world.categories import CATEGORIES
from fgdm.world.palette import PALETTE
from fgdm.world.sprites import sprites_by_category

if __name__ == "__main__":
    counts = sprites_by_category()
    print("| id | name | kind | RGB | sprites |")
    print("|---:|---|---|---|---:|")
    for c in CATEGORIES:
        r, g, b = PALETTE[c.id]
        print(f"| {c.id} | {c.name} | {c.kind} | ({r}, {g}, {b}) | {len(counts.get(c.name, ()))} |")

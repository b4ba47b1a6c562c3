"""Derive the fixed SceneWorld segmentation palette (run once; the result lives in palette.py).

Greedy farthest-point selection over an RGB grid of step 15, black reserved for "void": each new
colour maximises its Euclidean distance to every colour already chosen. For 90 classes the closest
two colours are 60 apart, so a decoder can accept colours up to 30 away from a palette entry
without ambiguity. (Colours blended half-way between two classes can still land near a third;
the decoder resolves those border pixels from their neighbours, see conditions.py.)

    python scripts/make_palette.py [N]
"""

import sys

import numpy as np


def make_palette(n: int, step: int = 15) -> np.ndarray:
    levels = np.arange(0, 256, step)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    dist = np.linalg.norm(grid, axis=1)  # distance to the reserved black
    chosen = []
    for _ in range(n):
        c = grid[int(np.argmax(dist))]
        chosen.append(c)
        dist = np.minimum(dist, np.linalg.norm(grid - c, axis=1))
    return np.array(chosen, dtype=np.int64)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    pal = make_palette(n)
    full = np.vstack([pal, [[0, 0, 0]]])
    d = np.linalg.norm(full[:, None] - full[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    print(f"# {n} colours, min distance {d.min():.1f} (void black included)")
    print("PALETTE: tuple[tuple[int, int, int], ...] = (")
    for i in range(0, n, 6):
        print("    " + " ".join(f"({r}, {g}, {b})," for r, g, b in pal[i : i + 6]))
    print(")")

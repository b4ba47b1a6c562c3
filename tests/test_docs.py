"""The Python examples of docs/api.md run as written, on tiny random models (paths swapped)."""

import re
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.+?)```", ROOT.joinpath(page).read_text(), flags=re.S)


def test_api_page_examples_run(tiny_sd_dir, random_graph, tmp_path, monkeypatch):
    from fgdm.world import make_sample

    spec = {"factors": {"seg": {"steps": 2}, "image": {"kind": "controlnet", "parents": ["seg"], "steps": 2}}}
    graph = random_graph(spec).save_pretrained(tmp_path / "graph")
    monkeypatch.chdir(tmp_path)
    Image.fromarray(make_sample(0, seed=3, size=64).render.image).save("photo.png")
    swaps = {'"runs/minisd-preview"': repr(str(tiny_sd_dir)), '"runs/train/graph"': repr(str(graph))}
    blocks = _blocks("docs/api.md")
    assert len(blocks) == 4
    env: dict = {}
    for code in blocks:  # one namespace, as a reader running the page top to bottom
        for old, new in swaps.items():
            code = code.replace(old, new)
        exec(compile(code, "docs/api.md", "exec"), env)  # our own documentation, run as a reader would
    assert Path("cat.png").exists() and Path("edited.png").exists()
    assert env["out"].images and env["again"].images and env["seg"].dtype == np.uint8
    assert env["dog"].shape == env["maps"].shape[1:3]
    assert env["res"].edited_prompt == "a horse on the grass"
    assert env["edited"].objects() != env["sample"].objects()  # the move and flip changed the map

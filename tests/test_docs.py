"""The Python examples of docs/api.md run as written, on tiny random models (paths swapped)."""

import re
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _fenced(page: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of a markdown page, fences paired in order."""
    blocks, lang, lines = [], None, []
    for line in ROOT.joinpath(page).read_text().splitlines():
        if line.lstrip().startswith("```"):
            if lang is None:
                lang, lines = line.strip()[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f"{page}: a fenced block is not closed"
    return blocks


def _blocks(page: str) -> list[str]:
    return [code for lang, code in _fenced(page) if lang == "python"]


def test_api_page_examples_run(tiny_sd_dir, random_graph, tmp_path, monkeypatch):
    from fgdm.world import make_sample
    from fgdm.world.conditions import resize_labels

    spec = {"factors": {"seg": {"steps": 2}, "image": {"kind": "controlnet", "parents": ["seg"], "steps": 2}}}
    graph = random_graph(spec).save_pretrained(tmp_path / "graph")
    monkeypatch.chdir(tmp_path)
    Image.fromarray(make_sample(0, seed=3, size=64).render.image).save("photo.png")
    swaps = {"Text2ImagePipeline.from_pretrained()": f"Text2ImagePipeline.from_pretrained({str(tiny_sd_dir)!r})",
             '"runs/train/graph"': repr(str(graph))}  # fmt: skip
    known = np.full((32, 32), 83, np.uint8)  # the judge's map of the photo, known: a dog on the grass
    known[8:24, 8:20] = 16  # (a masked text edit needs the judge to find the class it names)
    monkeypatch.setattr("fgdm.editing.real.extract_map", lambda judge, image, size: resize_labels(known, size))
    blocks = _blocks("docs/api.md")
    assert len(blocks) == 4 and all(any(k in b for b in blocks) for k in swaps)  # each swap finds its text
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
    assert env["kept"].size == env["out"].images[0].size
    assert len(env["search"].candidates) == 2 and env["search"].image is not None


def _doc_commands() -> list[tuple[str, list[str]]]:
    """Every ``fgdm ...`` command line in the README's and docs' shell blocks, as argv (brackets of
    optional parts dropped, the first of ``a|b`` alternatives taken, placeholders like G made 1);
    lines that abbreviate (``...``, shell variables, prose in parentheses) are left out."""
    import shlex

    out = []
    for page in ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.joinpath("docs").glob("*.md"))]:
        for block in [code for lang, code in _fenced(page) if lang in ("", "bash", "sh")]:
            for line in block.replace("\\\n", " ").splitlines():
                m = re.match(r"^\s*(?:[A-Z_]+=\S+\s+)*(fgdm\s.*)$", line)
                if m is None:
                    continue
                lexer = shlex.shlex(m.group(1), posix=True, punctuation_chars="&;")
                lexer.whitespace_split, lexer.commenters = True, "#"
                argv = []
                for tok in lexer:
                    if tok in {"&", ";", "&&", ";;"}:
                        break
                    argv.append(tok)
                argv = [t.strip("[]") for t in argv]
                if any(t == "..." or "$" in t or t.startswith("(") for t in argv):
                    continue
                argv = [t.split("|")[0] if "|" in t and not t.startswith("-") else t for t in argv if t]
                out.append((page, ["1" if re.fullmatch(r"[A-Z]", t) else t for t in argv]))
    return out


def test_every_documented_command_parses():
    """A renamed or removed option breaks the commands in the docs (and the reproduction commands
    of docs/results.md): every one of them must still parse."""
    import contextlib
    import io

    from fgdm.cli import build_parser

    cmds = _doc_commands()
    assert len(cmds) > 100 and {page for page, _ in cmds} >= {"README.md", "docs/results.md", "docs/training.md"}
    bad = []
    for page, argv in cmds:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                build_parser().parse_args(argv[1:])
        except SystemExit:
            bad.append(f"{page}: {' '.join(argv)}: {err.getvalue().strip().splitlines()[-1]}")
    assert bad == []


def test_readme_python_example_runs():
    (code,) = _blocks("README.md")
    assert "num_workers=8" in code
    code = code.replace("num_workers=8", "num_workers=0")  # this test's machine may have 2 cores
    env: dict = {}
    exec(compile(code, "README.md", "exec"), env)
    assert env["masks"] is not None and len(env["ds"]) == 100_000
    assert next(iter(env["loader"]))["image"].shape[0] == 64


def test_every_file_the_docs_name_exists():
    """Scripts, configs, prompt sets, images and pages named in the README and docs (links included)."""
    pages = [ROOT / "README.md", *sorted(ROOT.joinpath("docs").glob("*.md"))]
    missing = []
    for page in pages:
        text = page.read_text()
        named = re.findall(r"\b((?:scripts|configs|prompts|docs)/[\w./-]+\.(?:py|sh|yaml|json|txt|png|md))\b", text)
        links = [page.parent.joinpath(t).relative_to(ROOT).as_posix()
                 for t in re.findall(r"\]\(([\w./-]+\.(?:png|md))\)", text)]  # fmt: skip
        missing += [f"{page.name}: {n}" for n in sorted(set(named + links)) if not ROOT.joinpath(n).exists()]
    assert missing == []

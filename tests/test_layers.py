"""The layering of DESIGN.md: each layer imports only from the layers above it."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fgdm"
ORDER = ["world", "models", "attention", "losses", "sampling", "pipelines", "compliance", "editing", "training",
         "eval", "ui"]  # fmt: skip
SHARED = {"runs", "__init__"}  # helpers every layer may use


def _imports(path: Path) -> set[str]:
    """First components of the fgdm subpackages a module imports (relative imports resolved)."""
    rel = path.relative_to(SRC).with_suffix("").parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(rel[: len(rel) - node.level])
            target = base + (node.module.split(".") if node.module else [])
            if target:
                out.add(target[0])
            else:  # "from .. import x": the names are subpackages
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fgdm."):
            out.add(node.module.split(".")[1])
    return out


def test_each_layer_imports_only_from_layers_above():
    bad = []
    for path in SRC.rglob("*.py"):
        layer = path.relative_to(SRC).parts[0]
        if layer not in ORDER:
            continue  # cli.py, runs.py, __main__.py may use everything
        for imp in _imports(path) - SHARED - {layer}:
            if imp in ORDER and ORDER.index(imp) > ORDER.index(layer):
                bad.append(f"{path.relative_to(SRC)} imports {imp}")
    assert bad == []


def test_import_scanner_sees_relative_imports():
    assert "world" in _imports(SRC / "world" / "render.py")  # from .categories import ...
    assert {"attention", "models", "sampling"} <= _imports(SRC / "pipelines" / "text2image.py")  # from ..models ...

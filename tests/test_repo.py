import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    quick = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_quick_start_has_exactly_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert "fgdm world render" in cmds[0] and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = [ln for ln in ROOT.joinpath(".ci", "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert _readme_commands()[1] in ci


def test_no_pickled_weights_are_shipped():
    bad = [p for p in ROOT.joinpath("src").rglob("*") if p.suffix in {".pt", ".pth", ".bin", ".ckpt", ".pkl"}]
    assert bad == []


def test_device_scripts_parse_and_name_only_files_that_exist():
    """The GPU stage scripts cannot be run here, so a typo in them would cost device minutes: they
    must parse, handle every stage their usage names, and name configs, scripts and prompt sets
    that exist (every factor of the usage line included)."""
    import shutil
    import subprocess

    stage_sh, receive_sh = ROOT / "scripts" / "device_stage.sh", ROOT / "scripts" / "receive_stage.sh"
    if shutil.which("bash"):
        for script in (stage_sh, receive_sh):
            assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, script.name
    for script in (stage_sh, receive_sh):
        text = script.read_text()
        stages = re.search(r"stage=\$\{1:\?stage: ([^}]+)\}", text).group(1).split(" | ")
        labels = {name for line in re.findall(r"^  ([a-z|-]+)\)", text, re.M) for name in line.split("|")}
        assert set(stages) <= labels, (script.name, set(stages) - labels)
        named = set(re.findall(r"(?:configs|scripts|prompts)/[a-z0-9_]+\.(?:yaml|py|sh|json)", text))  # NAME: a placeholder
        assert named and all((ROOT / n).exists() for n in named), sorted(n for n in named if not (ROOT / n).exists())
    factors = re.search(r"# \((seg depth sketch image[a-z_ ]*)\)", stage_sh.read_text()).group(1).split()
    for f in factors:
        cfg = f"image_factor{f[len('image'):]}.yaml" if f.startswith("image") else f"factor_{f}.yaml"
        assert (ROOT / "configs" / cfg).exists(), cfg


# DESIGN.md's layers, top first: each may import only from itself and the layers above it.
# ``runs`` (run folders) and the package root (``__version__``) are shared helpers below none.
LAYERS = ["world", "models", "attention", "losses", "sampling", "pipelines", "compliance", "editing", "training",
          "eval", "cli", "__main__"]  # fmt: skip
SHARED = {"runs", "__init__"}
METRICS = {"metrics", "features", "quality", "region", "plots", "prompts", "timing"}  # eval modules that only measure


def _fgdm_imports(code: str, pkg: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Every fgdm name that ``code``, a module of the package ``fgdm.<pkg>``, imports (module-level
    or inside a function), as its parts under fgdm."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            mods = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "fgdm"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").split(".")[0] != "fgdm":
                    continue
                base = node.module.split(".")[1:]
            else:
                base = list(pkg[: len(pkg) - (node.level - 1)]) + (node.module.split(".") if node.module else [])
            mods = [base + [a.name] for a in node.names]
        else:
            continue
        found.update(tuple(m) for m in mods if m)
    return found


def test_imports_keep_the_layering_of_design_md():
    """A layer never imports a layer below it (a pipeline never reaches into training code), and
    the eval modules that compute metrics never reach into pipelines, training or the CLI."""
    bad = []
    for path in sorted((ROOT / "src" / "fgdm").rglob("*.py")):
        rel = path.relative_to(ROOT / "src" / "fgdm").with_suffix("").parts
        layer = rel[0]
        if layer in SHARED:
            continue
        assert layer in LAYERS, f"{path}: not a layer of DESIGN.md; add it to LAYERS or SHARED"
        for target in _fgdm_imports(path.read_text(), rel[:-1]):
            top = target[0]
            if top in SHARED or top == "__version__" or top == layer:
                continue
            assert top in LAYERS, f"{path} imports fgdm.{'.'.join(target)}, which is no layer"
            if LAYERS.index(top) > LAYERS.index(layer):
                bad.append(f"{'/'.join(rel)} -> {top}")
            if layer == "eval" and rel[-1] in METRICS and top in {"pipelines", "training", "cli"}:
                bad.append(f"{'/'.join(rel)} (a metric) -> {top}")
    assert bad == []


def test_the_layering_check_sees_every_kind_of_import():
    """The check above can fail: relative, absolute and function-level imports are all seen."""
    code = "from ..training import loop\nimport fgdm.eval.runner\nimport numpy\n\n\ndef f():\n    from . import ddim\n"
    assert _fgdm_imports(code, ("pipelines",)) == {("training", "loop"), ("eval", "runner"), ("pipelines", "ddim")}
    assert _fgdm_imports("from .. import __version__\nfrom ..world.scene import Scene\n", ("eval",)) == {
        ("__version__",), ("world", "scene", "Scene")}


def test_device_slim_takes_out_only_committed_unused_files_and_restores_them(tmp_path):
    """scripts/device_slim.sh: per stage, the docs' figures, the evaluation MiniCLIP and factor
    checkpoints leave the working tree (never an uncommitted change), the size is reported against
    the device's 64 MiB, and `restore` brings every file back as committed."""
    import shutil
    import subprocess

    import pytest

    if not (shutil.which("bash") and shutil.which("git")):
        pytest.skip("needs bash and git")
    repo = tmp_path / "repo"
    files = {"docs/a.png": b"png" * 100, "docs/notes.md": b"text", "src/fgdm/models/data/miniclip/w.safetensors": b"w" * 1000,
             "src/fgdm/models/data/minisd/u.safetensors": b"u" * 500, "checkpoints/factor_seg/ema-00000.safetensors": b"e" * 300,
             "checkpoints/factor_seg/state.json": b"{}", "scripts/device_slim.sh": (ROOT / "scripts" / "device_slim.sh").read_bytes()}  # fmt: skip
    for rel, data in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)

    def slim(*args):
        return subprocess.run(["bash", "scripts/device_slim.sh", *args], cwd=repo, capture_output=True, text=True)

    def present():
        return {rel for rel in files if (repo / rel).exists()}

    r = slim("factors")
    assert r.returncode == 0 and "would travel" in r.stdout, r.stderr
    assert present() == set(files) - {"docs/a.png", "src/fgdm/models/data/miniclip/w.safetensors"}
    assert slim("restore").returncode == 0 and present() == set(files)
    assert slim("eval-fgdm").returncode == 0  # evaluates: keeps MiniCLIP, needs no factor checkpoints
    assert present() == set(files) - {"docs/a.png", "checkpoints/factor_seg/ema-00000.safetensors",
                                      "checkpoints/factor_seg/state.json"}  # fmt: skip
    assert slim("factors").returncode == 0 and present() == set(files) - {  # slims add up until a restore
        "docs/a.png", "src/fgdm/models/data/miniclip/w.safetensors", "checkpoints/factor_seg/ema-00000.safetensors",
        "checkpoints/factor_seg/state.json"}  # fmt: skip
    assert slim("restore").returncode == 0 and present() == set(files)
    assert all((repo / rel).read_bytes() == data for rel, data in files.items())
    (repo / "docs" / "a.png").write_bytes(b"changed")
    r = slim("graph")
    assert r.returncode == 2 and "uncommitted changes" in r.stderr and present() == set(files)
    subprocess.run([*git, "checkout", "--", "docs/a.png"], check=True)
    assert slim("nosuchstage").returncode == 2
    stages = re.findall(r"^  ([a-z-]+)\)", (ROOT / "scripts" / "device_stage.sh").read_text(), flags=re.M)
    for stage in set(stages) - {"cpu", "pack-base"}:  # every stage a device call runs (those two run here)
        assert slim(stage).returncode == 0, stage
        assert slim("restore").returncode == 0 and present() == set(files)
    big = repo / "big.bin"  # ignored by nothing: an untracked file travels too
    with open(big, "wb") as f:
        f.truncate(65 * 1024 * 1024)
    r = slim("size")
    assert r.returncode == 1 and "over the device's 64 MiB" in r.stderr
    big.unlink()
    r = slim("size", "scripts")  # a carried path counts
    assert r.returncode == 0 and "of 64 MiB" in r.stdout
    assert slim("size", "nonexistent").returncode == 2

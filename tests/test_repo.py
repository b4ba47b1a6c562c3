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

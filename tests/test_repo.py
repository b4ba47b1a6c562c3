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

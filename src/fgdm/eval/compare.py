"""Two benchmark runs (``fgdm eval recall / multigen / visor``) of the same prompts and seeds, compared
image by image: for each measure, its value in either run, how many images the second run does
better and worse on, and the exact sign-test p of that split (``fgdm eval compare A B``).

Paired counts are what tell a real change from seed luck: two UNets scoring 30.8% and 32.0% on 500
images differed on 66 of them, 36 one way and 30 the other (p = 0.54; results.md's cool-down). The
paired "gained / lost" columns of results.md are this comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

from .metrics import object_recall, ordinal, sign_test

BENCHMARKS = ("recall", "multigen", "visor")


def run_settings(run: str | Path, what: str) -> dict:
    """The settings a benchmark run folder's ``record.json`` holds (what drew and judged it); a clear
    error naming ``what`` (the argument) if the folder is not one. Shared with ``--images-from``."""
    try:
        settings = json.loads((Path(run) / "record.json").read_text())["settings"]
        if not isinstance(settings, dict):
            raise TypeError("settings is not a dict")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{what} {str(run)!r} is not a benchmark run folder (no readable record.json: "
                         f"{e})") from None  # fmt: skip
    return settings


def load_run(run: str | Path, what: str) -> tuple[dict, dict[tuple[int, int], dict]]:
    """A benchmark run folder's settings and its per-image rows keyed by (prompt index, image
    index); a clear error naming ``what`` (the argument) if it is not a recall/multigen/visor run."""
    settings = run_settings(run, what)
    if settings.get("kind") not in BENCHMARKS:
        raise ValueError(f"{what} {str(run)!r} is a {settings.get('kind')!r} run; compare takes "
                         f"{', '.join(BENCHMARKS)} runs")  # fmt: skip
    rows = {}
    for f in sorted((Path(run) / "results").glob("*.json")):
        try:
            r = json.loads(f.read_text())
            rows[(int(r["prompt_index"]), int(r["k"]))] = r
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{what}: {str(f)!r} is not a benchmark result ({e})") from None
    if not rows:
        raise ValueError(f"{what} {str(run)!r} holds no judged images yet (results/ is empty)")
    return settings, rows


def _paired(name: str, a: list[float], b: list[float], *, rate: bool = True) -> dict:
    t = sign_test(a, b)
    scale = 100.0 if rate else 1.0
    return {"measure": name, "n": len(a), "a": round(scale * sum(a) / len(a), 4 if not rate else 2),
            "b": round(scale * sum(b) / len(b), 4 if not rate else 2),
            "b_better": t["better"], "b_worse": t["worse"], "p": t["p"]}  # fmt: skip


def compare_rows(a: dict[tuple[int, int], dict], b: dict[tuple[int, int], dict]) -> dict:
    """Measures over the images both runs hold: mean object recall, all named objects present, each
    named position present, and (relation prompts) the relation holding where both runs have every
    object. Every shared image must have the same prompt and seed in both runs."""
    keys = sorted(a.keys() & b.keys())
    if not keys:
        raise ValueError("the two runs share no image (prompt index and image index): nothing to compare")
    for key in keys:
        ra, rb = a[key], b[key]
        if ra["prompt"] != rb["prompt"] or ra["seed"] != rb["seed"]:
            raise ValueError(f"image {key[1]} of prompt {key[0]} differs between the runs: {ra['prompt']!r} seed "
                             f"{ra['seed']} against {rb['prompt']!r} seed {rb['seed']} (compare takes runs of the "
                             "same prompts and seeds)")  # fmt: skip
    pairs = [(a[k], b[k]) for k in keys]
    rows = [
        _paired("object recall", [object_recall(x["objects"], x["present"]) for x, _ in pairs],
                [object_recall(y["objects"], y["present"]) for _, y in pairs], rate=False),
        _paired("all named objects present", [float(set(x["objects"]) <= set(x["present"])) for x, _ in pairs],
                [float(set(y["objects"]) <= set(y["present"])) for _, y in pairs]),
    ]  # fmt: skip
    longest = max(len(x["objects"]) for x, _ in pairs)
    if longest > 1:  # a single-object set's only position is the row above
        for i in range(longest):
            sel = [(x, y) for x, y in pairs if len(x["objects"]) > i]
            rows.append(_paired(f"{ordinal(i + 1)} named object present",
                                [float(x["objects"][i] in x["present"]) for x, _ in sel],
                                [float(y["objects"][i] in y["present"]) for _, y in sel]))  # fmt: skip
    rel = [(x, y) for x, y in pairs if x.get("relation_holds") is not None and y.get("relation_holds") is not None]
    if rel:
        rows.append(_paired("relation holds (both runs have both objects)",
                            [float(x["relation_holds"]) for x, _ in rel], [float(y["relation_holds"]) for _, y in rel]))  # fmt: skip
    return {"images": len(keys), "only_in_a": len(a.keys() - b.keys()), "only_in_b": len(b.keys() - a.keys()),
            "measures": rows}  # fmt: skip


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """:func:`compare_rows` of two run folders, with what each run was (model, judge) and a warning
    when they were judged by different judges (then a difference may be the judges')."""
    sa, a = load_run(run_a, "A")
    sb, b = load_run(run_b, "B")
    out = compare_rows(a, b)
    out["a"] = {"run": str(run_a), "model": sa.get("model"), "judge_fingerprint": sa.get("judge_fingerprint")}
    out["b"] = {"run": str(run_b), "model": sb.get("model"), "judge_fingerprint": sb.get("judge_fingerprint")}
    if sa.get("judge_fingerprint") != sb.get("judge_fingerprint"):
        out["warning"] = "the runs were judged by different judges: a difference may be the judges', not the models'"
    return out


def markdown_table(result: dict) -> str:
    """The comparison as a markdown table (rates in %, recall as a mean)."""
    lines = [f"A: {result['a']['run']} ({result['a']['model']})", f"B: {result['b']['run']} ({result['b']['model']})",
             f"{result['images']} images in both runs"
             + (f" ({result['only_in_a']} only in A, {result['only_in_b']} only in B, left out)"
                if result["only_in_a"] or result["only_in_b"] else ""),
             *([f"warning: {result['warning']}"] if "warning" in result else []), "",
             "| measure | images | A | B | B better / worse | p (sign test) |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["measures"]:
        lines.append(f"| {r['measure']} | {r['n']} | {r['a']} | {r['b']} | {r['b_better']} / {r['b_worse']} | {r['p']:.3g} |")
    return "\n".join(lines)

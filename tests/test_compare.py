import json

import pytest

from fgdm.cli import main
from fgdm.eval.compare import compare_rows
from fgdm.eval.metrics import ordinal


def _run(folder, verdicts, *, kind="recall", judge="j1", prompts=None, seeds=None, relations=None):
    """A benchmark run folder as the runners leave it: record.json and one results/*.json per image.
    ``verdicts[i]`` is what the judge found in image i (prompt i, one image each)."""
    (folder / "results").mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"settings": {"kind": kind, "model": folder.name,
                                                                 "judge_fingerprint": judge}, "status": "done"}))  # fmt: skip
    for i, present in enumerate(verdicts):
        row = {"prompt_index": i, "k": 0, "prompt": (prompts or {}).get(i, f"a photo of a dog and a cat {i}"),
               "objects": ["dog", "cat"], "seed": (seeds or {}).get(i, 1000 * i), "seconds": 1.0, "present": present,
               "relation": None}  # fmt: skip
        if relations is not None:
            row["relation_holds"] = relations[i]
        (folder / "results" / f"p{i:05d}-00.json").write_text(json.dumps(row))
    return folder


def test_paired_counts_and_sign_test(tmp_path, capsys):
    """Each measure in both runs, the images B does better and worse on, and the exact two-sided sign
    test: here B finds the cat in 6 more images and loses the dog in 1 (p = 2 * 8/128 = 0.125)."""
    a = [["dog"]] * 6 + [["dog", "cat"]] * 3 + [[]]
    b = [["dog", "cat"]] * 6 + [["dog", "cat"]] * 2 + [["cat"]] + [[]]
    ra, rb = _run(tmp_path / "A", a), _run(tmp_path / "B", b)
    assert main(["eval", "compare", str(ra), str(rb), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    m = {r["measure"]: r for r in res["measures"]}
    assert res["images"] == 10 and "warning" not in res
    assert m["all named objects present"] == {"measure": "all named objects present", "n": 10, "a": 30.0, "b": 80.0,
                                              "b_better": 6, "b_worse": 1, "p": 0.125}  # fmt: skip
    assert (m["1st named object present"]["a"], m["1st named object present"]["b"]) == (90.0, 80.0)
    assert (m["2nd named object present"]["b_better"], m["2nd named object present"]["b_worse"]) == (6, 0)
    assert m["2nd named object present"]["p"] == 2 / 2**6
    assert m["object recall"]["a"] == 0.6 and m["object recall"]["b"] == 0.85
    assert main(["eval", "compare", str(ra), str(rb)]) == 0  # the markdown table
    table = capsys.readouterr().out
    assert "| all named objects present | 10 | 30.0 | 80.0 | 6 / 1 | 0.125 |" in table
    # swapped, the counts swap and p stays
    swapped = {r["measure"]: r for r in compare_rows(*[_rows(x) for x in (rb, ra)])["measures"]}
    assert swapped["all named objects present"]["b_worse"] == 6 and swapped["all named objects present"]["p"] == 0.125


def _rows(folder):
    from fgdm.eval.compare import load_run

    return load_run(folder, "run")[1]


def test_relations_partial_runs_and_judges(tmp_path, capsys):
    """Relation prompts add the relation measure; images in only one run are left out and counted;
    different judges are warned about."""
    ra = _run(tmp_path / "A", [["dog", "cat"]] * 4, kind="visor", relations=[True, False, False, None])
    rb = _run(tmp_path / "B", [["dog", "cat"]] * 3, kind="visor", relations=[True, True, True], judge="j2")
    res = json.loads((main(["eval", "compare", str(ra), str(rb), "--json"]), capsys.readouterr().out)[1])
    rel = next(r for r in res["measures"] if r["measure"].startswith("relation holds"))
    assert (rel["n"], rel["a"], rel["b"], rel["b_better"], rel["b_worse"]) == (3, 33.33, 100.0, 2, 0)
    assert (res["images"], res["only_in_a"], res["only_in_b"]) == (3, 1, 0)
    assert "different judges" in res["warning"]
    assert main(["eval", "compare", str(ra), str(rb)]) == 0
    out = capsys.readouterr().out
    assert "1 only in A" in out and "warning: the runs were judged by different judges" in out


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    ra = _run(tmp_path / "A", [["dog"]] * 3)
    cases = [
        (_run(tmp_path / "B1", [["dog"]] * 3, prompts={1: "a photo of a bus"}), "image 0 of prompt 1 differs"),
        (_run(tmp_path / "B2", [["dog"]] * 3, seeds={2: 7}), "seed 2000 against"),
        (tmp_path / "nothing", "B 'PATH' is not a benchmark run folder"),
        (_run(tmp_path / "B3", [], kind="recall"), "holds no judged images yet"),
        (_run(tmp_path / "B4", [["dog"]], kind="sbpc"), "is a 'sbpc' run"),
    ]
    broken = _run(tmp_path / "B5", [["dog"]] * 2)
    (broken / "results" / "p00001-00.json").write_text("{")  # a result cut off mid-write
    cases.append((broken, "p00001-00.json' is not a benchmark result"))
    for b, needle in cases:
        assert main(["eval", "compare", str(ra), str(b)]) == 2, needle
        assert needle.replace("'PATH'", repr(str(b))) in capsys.readouterr().err
    with pytest.raises(ValueError, match="share no image"):
        compare_rows({(0, 0): {}}, {(1, 0): {}})


def test_ordinal():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]  # fmt: skip

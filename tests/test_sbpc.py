"""Sampling-based prompt compliance: scoring known maps, the choice rule, the search on a tiny graph, the CLI."""

import json

import numpy as np
import pytest
import torch

from fgdm.cli import main
from fgdm.compliance.recall import present_categories
from fgdm.compliance.sbpc import Candidate, choose, complete_map, sbpc, score_map
from fgdm.world.categories import category

GRAPH = {"factors": {"seg": {"steps": 2}, "image": {"kind": "controlnet", "parents": ["seg"], "steps": 2}}}


@pytest.fixture()
def graph(random_graph):
    return random_graph(GRAPH)


def _map(*objects, size=64):
    seg = np.full((size, size), category("grass").id, np.uint8)
    for k, (name, area) in enumerate(objects):
        side = round((area * size * size) ** 0.5)
        seg[k * 20 : k * 20 + side, :side] = category(name).id
    return seg


def test_score_map_on_known_maps():
    c = score_map(_map(("dog", 0.05), ("cat", 0.02)), ["dog", "cat", "bus"], 0, 7)
    assert c.recall == pytest.approx(2 / 3) and c.present == ["dog", "cat"] and c.missing == ["bus"]
    assert c.area == pytest.approx(0.07, abs=0.01) and c.seed == 7
    speck = score_map(_map(("dog", 0.001)), ["dog"], 0, 0)  # below the presence threshold
    assert speck.recall == 0 and speck.missing == ["dog"]


def test_component_rule_ignores_scattered_specks():
    """Specks of a class that add up past the threshold are present by area, not by component."""
    seg = _map(("dog", 0.05))
    cat = category("cat").id
    for k in range(8):  # 8 isolated 2x2 specks: 32 px = 0.78% in all, 0.1% each
        seg[50 + 2 * (k % 2) * 2, 8 * k : 8 * k + 2] = cat
        seg[51 + 2 * (k % 2) * 2, 8 * k : 8 * k + 2] = cat
    area, comp = (score_map(seg, ["dog", "cat"], 0, 0, rule=r) for r in ("area", "component"))
    assert area.present == ["dog", "cat"] and comp.present == ["dog"] and comp.missing == ["cat"]
    assert comp.area == pytest.approx(area.area - 32 / 64**2)  # the dog's one region, no specks
    assert present_categories(seg, rule="component") == {"dog"}
    seg[50:56, 0:6] = cat  # one solid 36-px region: present by either rule
    assert score_map(seg, ["cat"], 0, 0, rule="component").recall == 1
    with pytest.raises(ValueError, match=r"rule.*'biggest'"):
        present_categories(seg, rule="biggest")


def test_sbpc_in_a_graph_with_depth_samples_depth_on_its_pick(random_graph, tiny_judge_dir):
    """By default SBPC's final pass runs every factor but seg, jointly: depth too, and the image reads
    it; so does the table's FG-DM row (fgdm eval sbpc)."""
    from fgdm.eval.sbpc_bench import _generate
    from fgdm.models.judge import load_judge
    from fgdm.pipelines.text2image import Text2ImagePipeline

    g = random_graph({"factors": {"seg": {"steps": 2}, "depth": {"kind": "scratch", "parents": ["seg"], "steps": 2},
                                  "image": {"parents": ["seg", "depth"], "steps": 2}}})  # fmt: skip
    calls = []
    hook = g.modules["depth"].register_forward_hook(lambda *_: calls.append(1))
    res = sbpc(g, "a dog and a cat", n=2, cond_steps=2, cond_size=16, image_steps=2)
    assert calls and res.image is not None and set(res.maps) == {"seg", "depth"}
    calls.clear()
    only = sbpc(g, "a dog and a cat", n=2, cond_steps=2, cond_size=16, image_steps=2, factors=["image"])
    assert not calls and "depth" not in only.maps  # asked for the image alone: depth is the null condition
    cfg = {"config": "FG-DM t=2 N=2", "kind": "fgdm", "n": 2, "t": 2}
    _generate(cfg, "a dog and a cat", ["dog", "cat"], 0, graph=g, base=Text2ImagePipeline(g.base),
              judge=load_judge(tiny_judge_dir, "cpu"), cond_size=16, image_steps=2)  # fmt: skip
    hook.remove()
    assert calls


def test_map_presence_rules_script(graph, tiny_judge_dir, tmp_path, capsys, monkeypatch):
    """scripts/map_presence_rules.py (a figure in results.md): every candidate rendered and judged, both rules summarised."""
    import runpy
    from pathlib import Path

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "map_presence_rules.py")
    g = graph.save_pretrained(tmp_path / "g")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a qwzx\na dog and a cat on grass\na bus\n")
    argv = ["x", "--graph", str(g), "--prompts", str(prompts), "--n-prompts", "2", "--n", "2", "--cond-steps", "1",
            "--cond-size", "32", "--image-steps", "1", "--real", "3", "--judge", str(tiny_judge_dir)]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(script, run_name="__main__")
    r = json.loads(capsys.readouterr().out)
    assert r["n_prompts"] == 2 and len(r["candidates"]) == 4  # the prompt with no known object is skipped
    assert {c["prompt_index"] for c in r["candidates"]} == {0, 1}
    assert [c["seed"] for c in r["candidates"]] == [1000, 1001, 2000, 2001]  # seeds follow the file's lines
    for rule in ("area", "component"):
        assert set(r["summary"][rule]) == {"corr_map_vs_image_recall", "N=1", "N=2"}
        assert all(c[f"map_recall_{rule}"] in (0, 0.5, 1) for c in r["candidates"])
    best = [max(c["image_recall"] for c in r["candidates"] if c["prompt_index"] == p) for p in (0, 1)]
    assert r["summary"]["oracle N=2"] == pytest.approx(np.mean(best), abs=1e-4)
    assert r["real_maps"]["renders"] == 3 and 0 < r["real_maps"]["recall"]["area"] <= 1
    assert all(0 <= c["palette_fit"] <= 1 for c in r["candidates"])
    picks = [max((c for c in r["candidates"] if c["prompt_index"] == p),  # recall, then fit, then the earliest
                 key=lambda c: (c["map_recall_area"], c["palette_fit"], -c["candidate"])) for p in (0, 1)]
    fit = r["summary"]["palette_fit"]
    assert fit["image_recall_of_pick_fit_tiebreak N=2"] == pytest.approx(np.mean([c["image_recall"] for c in picks]), abs=1e-4)
    assert {"corr_vs_image_recall", "mean_within_prompt_corr"} <= set(fit)
    monkeypatch.setattr("sys.argv", [*argv[:7], "--n", "0"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 2 and "--n must be >= 1, got 0" in capsys.readouterr().err


def test_choice_rule_recall_then_area_then_earliest():
    mk = lambda i, r, a: Candidate(i, i, r, [], [], a)
    assert choose([mk(0, 0.5, 0.1), mk(1, 1.0, 0.01), mk(2, 0.75, 0.9)]) == 1
    assert choose([mk(0, 1.0, 0.1), mk(1, 1.0, 0.3), mk(2, 1.0, 0.2)]) == 1
    assert choose([mk(0, 0.5, 0.2), mk(1, 0.5, 0.2)]) == 0
    with pytest.raises(ValueError, match="no candidates"):
        choose([])


def test_complete_map_relabels_the_largest_unnamed_objects_as_the_missing_ones():
    seg = _map(("dog", 0.05), ("car", 0.04), ("bird", 0.02), ("kite", 0.001))  # the kite is a speck
    out, edits = complete_map(seg, ["dog", "cat", "bus", "train"])
    assert np.all(out[seg == category("car").id] == category("cat").id)  # the largest unnamed object
    assert np.all(out[seg == category("bird").id] == category("bus").id)  # the next largest, the next missing
    assert np.array_equal(out[seg == category("kite").id], seg[seg == category("kite").id])  # too small to count
    assert np.array_equal(out[~np.isin(seg, [category("car").id, category("bird").id])],
                          seg[~np.isin(seg, [category("car").id, category("bird").id])])  # nothing else moves
    assert [(e["from"], e["new"]) for e in edits] == [("car", "cat"), ("bird", "bus")]  # train: no donor left
    assert edits[0]["area"] == pytest.approx(0.04, abs=0.005) and edits[0]["op"] == "change_class"
    assert score_map(out, ["dog", "cat", "bus", "train"], 0, 0).missing == ["train"]
    # the instance ids are those fgdm edit addresses objects by: replaying the edits gives the same map
    from fgdm.editing import MapSample, apply_edits

    replay = apply_edits(MapSample.from_labels(seg), [{"op": "change_class", "target": e["instance"], "new": e["new"]}
                                                      for e in edits])  # fmt: skip
    assert np.array_equal(replay.seg, out)
    same, none = complete_map(seg, ["dog", "car"])  # nothing missing: nothing changes
    assert none == [] and np.array_equal(same, seg)
    with pytest.raises(ValueError, match="'grass' is a stuff class"):
        complete_map(seg, ["grass"])
    with pytest.raises(ValueError, match=r"labels must be \(H, W\)"):
        complete_map(seg[None], ["dog"])


def test_sbpc_complete_renders_the_completed_map(graph):
    """Same candidates and choice as without completion; the final pass sees the completed map."""
    kw = dict(n=3, cond_steps=2, cond_size=16, seed=2)
    plain = sbpc(graph, "a dog, a cat, a bus and a train", **kw)
    done = sbpc(graph, "a dog, a cat, a bus and a train", complete=True, **kw)
    assert [c.to_dict() for c in done.candidates] == [c.to_dict() for c in plain.candidates]
    assert done.chosen == plain.chosen and plain.completion is None and plain.completed_recall is None
    want, edits = complete_map(plain.labels, plain.objects)
    assert np.array_equal(done.labels, want) and done.completion == edits
    assert done.completed_recall == score_map(want, plain.objects, 0, 0).recall >= plain.candidates[plain.chosen].recall
    seed = plain.candidates[plain.chosen].seed
    again = graph("a dog, a cat, a bus and a train", factors=["image"], given={"seg": want}, seed=seed).images[0]
    assert np.array_equal(np.asarray(done.image), np.asarray(again))  # the image factor was given this map
    assert edits  # this seed's chosen map has unnamed objects to relabel, so the two images must differ
    assert not np.array_equal(np.asarray(done.image), np.asarray(plain.image))


def test_sbpc_split_draws_the_chosen_map_one_object_at_a_time(graph):
    """Same candidates and choice as without it; the final image is split_render's of the chosen map."""
    from fgdm.pipelines.split import split_render

    prompt, kw = "a dog, a cat, a bus and a train", dict(n=3, cond_steps=2, cond_size=16, seed=2)
    plain, done = sbpc(graph, prompt, **kw), sbpc(graph, prompt, split=0.0, **kw)
    assert [c.to_dict() for c in done.candidates] == [c.to_dict() for c in plain.candidates] and done.chosen == plain.chosen
    seed = plain.candidates[plain.chosen].seed
    again = split_render(graph, prompt, plain.labels, seed=seed, whole=0.0, objects=plain.objects).images[0]
    assert np.array_equal(np.asarray(done.image), np.asarray(again))
    assert not np.array_equal(np.asarray(done.image), np.asarray(plain.image))
    assert sbpc(graph, prompt, split=0.5, factors=["image"], **kw).image is not None
    early = sbpc(graph, prompt, split=0.0, split_steps=0.5, image_steps=4, **kw)  # the first 2 of 4 steps split
    again = split_render(graph, prompt, plain.labels, seed=seed, objects=plain.objects, steps=4, split_steps=0.5)
    assert np.array_equal(np.asarray(early.image), np.asarray(again.images[0]))
    with pytest.raises(ValueError, match=r"split: .*\[0, 1\]"):
        sbpc(graph, prompt, split=1.5, **kw)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=r"split_steps: .*\(0, 1\]"):
            sbpc(graph, prompt, split=0.0, split_steps=bad, **kw)
    with pytest.raises(ValueError, match="pass split too"):
        sbpc(graph, prompt, split_steps=0.5, **kw)
    for factors in ([], ["depth", "image"]):  # the image alone, not silently fewer factors than asked
        with pytest.raises(ValueError, match="factors must be"):
            sbpc(graph, prompt, split=0.0, factors=factors, **kw)


def test_search_records_every_candidate_and_renders_the_argmax(graph):
    seen = []
    hook = graph.modules["image"].register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs["controlnet_cond"].clone()), with_kwargs=True
    )
    res = sbpc(graph, "a dog and a cat on the grass", n=4, cond_steps=2, cond_size=16, seed=5, keep_candidates=True)
    hook.remove()
    assert [c.index for c in res.candidates] == [0, 1, 2, 3] and [c.seed for c in res.candidates] == [5, 6, 7, 8]
    assert res.objects == ["dog", "cat"] and res.chosen == choose(res.candidates)
    assert len(res.candidate_maps) == 4 and res.image is not None and res.image.size == (32, 32)
    assert all(torch.all(c[:, 4] == 1) for c in seen)  # the image factor saw the chosen map
    # candidate i is the seg map that `generate --seed seed+i` would sample, and scores as recorded
    one = graph("a dog and a cat on the grass", factors=["seg"], seed=5 + res.chosen, sizes={"seg": 16},
                steps={"seg": 2})  # fmt: skip
    assert np.array_equal(one.labels[0], res.labels)
    assert score_map(res.labels, res.objects, 0, 0).recall == res.candidates[res.chosen].recall
    assert set(res.timings) == {"candidates_s", "final_s", "total_s"}
    assert res.candidates[res.chosen].palette_fit == pytest.approx(one.palette_fit[0])  # recorded per candidate
    assert all(0 <= c.to_dict()["palette_fit"] <= 1 for c in res.candidates)


def test_early_stop_and_bad_inputs(graph):
    res = sbpc(graph, "a dog", n=6, cond_steps=2, cond_size=16, early_stop=1e-9, batch_size=2, factors=[])
    best = max(c.recall for c in res.candidates)
    if res.stopped_early:
        assert len(res.candidates) < 6 and best > 0
    else:
        assert len(res.candidates) == 6
    assert res.image is None  # factors=[]: only the search
    with pytest.raises(ValueError, match=r"names no known objects .*dragon"):
        sbpc(graph, "a dragon in the sky", n=2)
    with pytest.raises(ValueError, match="early_stop"):
        sbpc(graph, "a dog", n=2, early_stop=1.5)
    with pytest.raises(ValueError, match="seg is chosen by the search"):
        sbpc(graph, "a dog", n=2, factors=["seg", "image"])


def test_cli_sbpc_writes_candidates_and_record(graph, tmp_path, capsys):
    g = graph.save_pretrained(tmp_path / "g")
    out = tmp_path / "run"
    assert main(["generate", "a dog and a cat", "--sbpc", "3", "--graph", str(g), "--cond-steps", "2",
                 "--cond-size", "16", "--steps", "2", "--keep-candidates", "-o", str(out), "--quiet"]) == 0  # fmt: skip
    rec = json.loads((out / "record.json").read_text())
    assert rec["kind"] == "generate-sbpc" and len(rec["candidates"]) == 3
    assert rec["chosen_recall"] == max(c["recall"] for c in rec["candidates"])
    assert {"image-000.png", "seg-000.png", "candidates.png"} <= set(rec["files"])
    assert "SBPC: best of 3" in capsys.readouterr().out
    assert main(["generate", "a dragon", "--sbpc", "3", "--graph", str(g), "-o", str(tmp_path / "x")]) == 2
    assert "names no known objects" in capsys.readouterr().err
    assert rec["completion"] is None and rec["parameters"]["complete"] is False
    assert main(["generate", "a dog and a cat", "--sbpc", "3", "--graph", str(g), "--cond-steps", "2",
                 "--cond-size", "16", "--steps", "2", "--complete", "-o", str(tmp_path / "c"), "--quiet"]) == 0  # fmt: skip
    done = json.loads((tmp_path / "c" / "record.json").read_text())
    assert done["candidates"] == rec["candidates"] and done["parameters"]["complete"] is True
    assert done["completion"]["recall_after"] >= done["chosen_recall"]
    assert all(e["op"] == "change_class" and e["new"] in ("dog", "cat") for e in done["completion"]["edits"])
    assert "after" in capsys.readouterr().out
    assert main(["generate", "a dog and a cat", "--sbpc", "3", "--graph", str(g), "--cond-steps", "2",
                 "--cond-size", "16", "--steps", "2", "--split-objects", "0", "-o", str(tmp_path / "s"), "--quiet"]) == 0  # fmt: skip
    split = json.loads((tmp_path / "s" / "record.json").read_text())
    assert split["candidates"] == rec["candidates"] and split["parameters"]["split_objects"] == 0
    assert rec["parameters"]["split_objects"] is None and split["parameters"]["split_steps"] == 1
    assert main(["generate", "a dog and a cat", "--sbpc", "3", "--graph", str(g), "--cond-steps", "2", "--cond-size", "16",
                 "--steps", "2", "--split-objects", "0", "--split-steps", "0.5", "-o", str(tmp_path / "s2"), "--quiet"]) == 0  # fmt: skip
    early = json.loads((tmp_path / "s2" / "record.json").read_text())
    assert early["candidates"] == rec["candidates"] and early["parameters"]["split_steps"] == 0.5
    assert main(["generate", "a dog", "--sbpc", "2", "--split-steps", "0.5", "--graph", str(g), "-o", str(tmp_path / "y")]) == 2
    assert "pass --split-objects W too" in capsys.readouterr().err
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit):
            main(["generate", "a dog", "--sbpc", "2", "--split-objects", "0", "--split-steps", bad, "-o", str(tmp_path / "y")])
        assert "--split-steps" in capsys.readouterr().err
    for opt in (["--keep-candidates"], ["--complete"], ["--split-objects", "0"], ["--split-steps", "0.5"]):
        assert main(["generate", "a dog", *opt, "-o", str(tmp_path / "y")]) == 2
        assert "pass --sbpc" in capsys.readouterr().err
    assert main(["generate", "a dog", "--best-of", "2", "--split-objects", "0", "-o", str(tmp_path / "y")]) == 2
    assert "--split-objects" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "a dog", "--sbpc", "2", "--split-objects", "1.5", "-o", str(tmp_path / "y")])
    assert "--split-objects" in capsys.readouterr().err
    assert main(["generate", "a dog", "--sbpc", "2", "--eta", "1", "--graph", str(g), "-o", str(tmp_path / "y")]) == 2
    assert "--eta is not available with --sbpc" in capsys.readouterr().err
    for extra in (["--sbpc", "2"], ["--factors", "seg,image"]):  # the option is named, before any sampling
        assert main(["generate", "a dog", *extra, "--graph", str(g), "--cond-size", "17", "-o", str(tmp_path / "z")]) == 2
        assert "--cond-size must be a multiple of" in capsys.readouterr().err
        assert not (tmp_path / "z").exists()


def test_eval_sbpc_table_resumes_and_plots(graph, tiny_judge_dir, tmp_path, capsys, monkeypatch):
    from fgdm.cli import main as cli
    from fgdm.eval.sbpc_bench import configurations

    g = graph.save_pretrained(tmp_path / "g")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog, a cat and a bus\na dragon\na pizza and a cup on a table\n")
    out = tmp_path / "run"
    argv = ["eval", "sbpc", "--prompts", str(prompts), "--graph", str(g), "--judge", str(tiny_judge_dir),
            "--ns", "1,2", "--cond-steps", "2", "--baseline-n", "2", "--cond-size", "16", "--steps", "2",
            "--out", str(out), "--json"]  # fmt: skip
    capsys.readouterr()
    assert cli(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["config"] for r in rows] == [c["config"] for c in configurations([1, 2], [2], 2)]
    several = [c["config"] for c in configurations([1], [2], [5, 1, 2, 5], ceiling=False)]  # sorted, once each
    assert several == ["base N=1", "base N=2 + judge", "base N=5 + judge", "FG-DM t=2 N=1"]
    assert [r["config"] for r in rows] == ["base N=1", "base N=2 + judge", "FG-DM t=2 N=1", "FG-DM t=2 N=2",
                                           "real renders (ceiling)", "FG-DM on real maps (map ceiling)"]  # fmt: skip
    ceiling = json.loads((out / "results" / "p00000-real_renders_(ceiling).json").read_text())
    from PIL import Image

    assert Image.open(out / "images" / ceiling["image"]).size == (64, 64)  # renders exist from 64 px
    assert len(ceiling["candidates"]) == 1 and ceiling["candidates"][0] == ceiling["final_image_recall"]
    # the map ceiling gives the same render's seg map to the image factor: its one candidate is that map's recall
    from fgdm.compliance.recall import object_recall
    from fgdm.eval.prompts import PromptEntry
    from fgdm.eval.runner import WorldRenders
    from fgdm.world.conditions import resize_labels

    mapc = json.loads((out / "results" / "p00000-FG-DM_on_real_maps_(map_ceiling).json").read_text())
    text, objs = "a dog, a cat and a bus", ["dog", "cat", "bus"]
    render = WorldRenders([PromptEntry(text, tuple(objs))]).render(text, 0, 64)[0]
    assert mapc["candidates"] == [object_recall(objs, present_categories(resize_labels(render.seg, 16)))]
    again = graph(text, factors=["image"], given={"seg": resize_labels(render.seg, 16)}, seed=0, steps={"image": 2})
    assert np.array_equal(np.asarray(Image.open(out / "images" / mapc["image"])), np.asarray(again.images[0]))
    for r in rows:
        assert r["prompts"] == 2 and 0 <= r["avg_min_recall"] <= r["avg_median_recall"] <= r["avg_max_recall"] <= 1
        assert r["seconds_per_prompt"] > 0 and {"final_image_recall", "avg_candidates_ge_0.9"} <= set(r)
    single = next(r for r in rows if r["config"] == "FG-DM t=2 N=1")
    assert single["avg_min_recall"] == single["avg_max_recall"]
    gf = {r["config"]: r["gflops_per_prompt"] for r in rows}  # counted operations, device-independent
    assert all(v > 0 for v in gf.values())
    assert gf["base N=2 + judge"] > 1.7 * gf["base N=1"]  # two images, and judging them (the prompt encoded once)
    assert gf["FG-DM t=2 N=2"] > gf["FG-DM t=2 N=1"]  # one more seg map; still one image
    assert gf["FG-DM t=2 N=2"] - gf["FG-DM t=2 N=1"] < gf["FG-DM t=2 N=1"]
    assert json.loads((out / "flops.json").read_text()).keys() == gf.keys()
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "done" and rec["skipped_prompts"] == ["a dragon"]
    assert rec["settings"]["final_factors"] == ["image"]  # every factor but seg (test_sbpc_in_a_graph_with_depth)
    assert (out / "table.md").read_text().startswith("| config") and (out / "recall_time.png").exists()
    assert Image.open(out / "sheet.png").width >= 6 * 128  # a column per configuration
    stamp = {f.name: f.stat().st_mtime_ns for f in (out / "results").iterdir()}
    assert cli([*argv, "--resume"]) == 0  # nothing is recomputed
    assert {f.name: f.stat().st_mtime_ns for f in (out / "results").iterdir()} == stamp
    assert json.loads(capsys.readouterr().out) == rows
    assert cli(argv) == 2
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli([*argv, "--baseline-n", "2,0"])
    assert "--baseline-n" in capsys.readouterr().err
    # scripts/sbpc_objects_by_size.py (a figure in results.md): each object's area in the real render's
    # map, and whether the judge finds it in every configuration's saved image
    import runpy
    from pathlib import Path

    from fgdm.compliance.recall import VERDICTS, region_verdict
    from fgdm.eval.sbpc_bench import result_file
    from fgdm.world.categories import category

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "sbpc_objects_by_size.py")
    monkeypatch.setattr("sys.argv", ["x", str(out), "--judge", str(tiny_judge_dir), "--json", str(tmp_path / "objs.json")])
    runpy.run_path(script, run_name="__main__")
    printed = capsys.readouterr().out
    assert "| object's area in the real map |" in printed and "| object's place in the prompt |" in printed
    assert "| what the judge gives most of each object's real-map region |" in printed
    assert "| thing classes the judge finds per image |" in printed
    verdict, kinds = region_verdict, VERDICTS  # the region verdicts on known labels
    dog, cat, bus, grass = (category(n).id for n in ("dog", "cat", "bus", "grass"))
    assert verdict(np.array([dog, dog, cat]), "dog", ["dog", "cat"]) == kinds[0]
    assert verdict(np.array([cat, cat, dog]), "dog", ["dog", "cat"]) == kinds[1]
    assert verdict(np.array([bus, bus, dog]), "dog", ["dog", "cat"]) == kinds[2]
    assert verdict(np.array([grass, grass, dog]), "dog", ["dog", "cat"]) == kinds[3] == verdict(np.array([]), "dog", ["dog"])
    objs = json.loads((tmp_path / "objs.json").read_text())
    assert all(set(o["region"]) == set(o["found"]) and set(o["region"].values()) <= set(kinds) for o in objs)
    assert [(o["prompt_index"], o["object"], o["place"]) for o in objs] == [
        (0, "dog", 1), (0, "cat", 2), (0, "bus", 3), (2, "pizza", 1), (2, "cup", 2), (2, "dining table", 3)]  # "a dragon" names none
    assert objs[0]["area"] == pytest.approx(float((render.seg == category("dog").id).mean()))
    for p in (0, 2):  # the objects it finds are the run's own recall of that prompt, configuration by configuration
        for r in rows:
            res = json.loads(result_file(out, p, r["config"]).read_text())
            found = [o["found"][r["config"]] for o in objs if o["prompt_index"] == p]
            assert np.mean(found) == pytest.approx(res["final_image_recall"])
    assert cli([*argv[:-3], "--ns", "1", "--split", "0", "--out", str(tmp_path / "sp"), "--json"]) == 0
    split = {r["config"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(split)[-4:] == ["FG-DM t=2 N=1 + split", "real renders (ceiling)", "FG-DM on real maps (map ceiling)",
                                "FG-DM on real maps (map ceiling) + split"]  # fmt: skip
    assert split["FG-DM t=2 N=1 + split"]["avg_max_recall"] == split["FG-DM t=2 N=1"]["avg_max_recall"]  # the same search
    assert json.loads((tmp_path / "sp" / "record.json").read_text())["settings"]["split"] == 0
    both = [c["config"] for c in configurations([1], [2], 2, ceiling=False, complete=True, split=0.0)]
    assert both[-3:] == ["FG-DM t=2 N=1 + complete", "FG-DM t=2 N=1 + split", "FG-DM t=2 N=1 + complete + split"]
    early = configurations([1], [2], 2, complete=True, split=0.0, split_steps=0.6)
    assert [c["config"] for c in early][-6:-3] == ["FG-DM t=2 N=1 + complete", "FG-DM t=2 N=1 + split (first 0.6)",
                                                   "FG-DM t=2 N=1 + complete + split (first 0.6)"]  # fmt: skip
    assert early[-1]["config"] == "FG-DM on real maps (map ceiling) + split (first 0.6)" and early[-1]["split_steps"] == 0.6
    assert cli([*argv[:-3], "--split-steps", "0.5", "--out", str(tmp_path / "ss")]) == 2
    assert "pass --split W too" in capsys.readouterr().err
    assert cli([*argv[:-3], "--no-ceiling", "--complete", "--out", str(tmp_path / "nc"), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert [r["config"] for r in done][-3:] == ["FG-DM t=2 N=2", "FG-DM t=2 N=1 + complete", "FG-DM t=2 N=2 + complete"]
    for n in (1, 2):  # the same search; the completed map names at least as many objects as the chosen one
        plain, comp = (next(r for r in done if r["config"] == f"FG-DM t=2 N={n}{x}") for x in ("", " + complete"))
        assert comp["avg_max_recall"] == plain["avg_max_recall"] <= comp["avg_completed_map_recall"]
        relabelled = (comp["avg_completed_map_recall"] > comp["avg_max_recall"])  # a change raises the recall
        assert (comp["avg_objects_relabelled"] > 0) == relabelled and "avg_completed_map_recall" not in plain


def test_seg_map_fit_script(graph, random_graph, tmp_path, capsys, monkeypatch):
    """scripts/seg_map_fit.py (a figure in results.md): palette fit by graph and guidance, one reference per base."""
    import runpy
    from pathlib import Path

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "seg_map_fit.py")
    g1, g2 = graph.save_pretrained(tmp_path / "g1"), graph.save_pretrained(tmp_path / "g2")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat on grass\na bus\na qwzx\n")
    argv = ["x", "--graph", str(g1), str(g2), "--prompts", str(prompts), "--n", "2", "--guidance", "1", "4"]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(script, run_name="__main__")
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 2 and [row["maps"] for row in r["rows"]] == ["real, through the VAE"] + ["sampled"] * 4
    assert [row["guidance"] for row in r["rows"]] == [None, 1, 4, 1, 4]
    for row in r["rows"]:  # a stricter tolerance can only keep fewer pixels
        assert 0 <= row["palette_fit_15"] <= row["palette_fit_30"] <= 1
    assert all(0 <= row["seg_object_recall"] <= 1 for row in r["rows"][1:])
    # the same factors under two names sample the same maps
    assert r["rows"][1]["palette_fit_30"] == r["rows"][3]["palette_fit_30"]
    no_seg = random_graph({"factors": {"depth": {"steps": 2}}}).save_pretrained(tmp_path / "d")
    for bad, msg in ((["--tolerance", "0"], "must be > 0"), (["--graph", str(no_seg)], "has no seg factor")):
        monkeypatch.setattr("sys.argv", [*argv, *bad])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 2 and msg in capsys.readouterr().err


def test_seg_map_fragments_script(graph, tmp_path, capsys, monkeypatch):
    """scripts/seg_map_fragments.py (a figure in results.md): objects' regions on known maps, and the script."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "seg_map_fragments.py"
    pieces = runpy.run_path(str(script))["object_pieces"]
    seg = np.full((8, 8), category("grass").id, np.uint8)
    seg[:2, :2], seg[6:, 6:], seg[3:5, 3:7] = category("dog").id, category("dog").id, category("cat").id
    assert pieces(seg, ["dog", "cat", "bus"]) == [(8 / 64, 2, 0.5), (8 / 64, 1, 1.0)]  # the bus: not shown
    g = graph.save_pretrained(tmp_path / "g")
    monkeypatch.chdir(script.parents[1])
    monkeypatch.setattr("sys.argv", ["x", "--prompts", "prompts/dense_6to8_200.json", "--n-prompts", "1", "--graph", str(g),
                                     "--n", "2", "--cond-steps", "2", "--cond-size", "16", "--out", str(tmp_path / "m.png")])  # fmt: skip
    capsys.readouterr()
    runpy.run_path(str(script), run_name="__main__")
    out = json.loads(capsys.readouterr().out)
    assert out["real"]["objects"] >= 1 and out["real"]["unnamed_thing_classes_per_map"] == 0
    assert (tmp_path / "m.png").exists()
    for bad, said in (([ "--n", "0"], "--n must be"), (["--cond-size", "17"], "cond")):  # clear errors, not tracebacks
        monkeypatch.setattr("sys.argv", ["x", "--prompts", "prompts/dense_6to8_200.json", "--n-prompts", "1",
                                         "--graph", str(g), "--n", "2", "--cond-steps", "2", *bad])  # fmt: skip
        with pytest.raises(SystemExit):
            runpy.run_path(str(script), run_name="__main__")
        assert said in capsys.readouterr().err


def test_sbpc_tidy_maps_script(random_graph, tiny_judge_dir, tmp_path, capsys, monkeypatch):
    """scripts/sbpc_tidy_maps.py (a figure in results.md): what tidy_map drops and fills, and the script."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "sbpc_tidy_maps.py"
    tidy = runpy.run_path(str(script))["tidy_map"]
    grass, sky, dog, cat, bus = (category(n).id for n in ("grass", "sky", "dog", "cat", "bus"))
    seg = np.full((12, 12), grass, np.uint8)
    seg[:3] = sky
    seg[5:9, 1:5] = dog  # the dog's largest region (16 px): kept
    seg[10:12, 10:12] = dog  # a dog speck of 4 < 0.5 x 16 px: filled with the grass around it
    seg[5:7, 7:10] = cat  # 6 px, the cat's only region: kept
    seg[1:3, 8:11] = bus  # the prompt names no bus: filled with the sky around it
    out = tidy(seg, ["dog", "cat"])
    want = seg.copy()
    want[10:12, 10:12], want[1:3, 8:11] = grass, sky
    assert np.array_equal(out, want) and seg[1, 8] == bus  # the input is left alone
    assert np.array_equal(tidy(seg, ["dog", "cat"], keep=0.2), np.where(seg == bus, sky, seg))  # a speck of 4 >= 0.2 x 16
    g = random_graph({"factors": {"seg": {"steps": 2, "size": 16}, "image": {"parents": ["seg"], "steps": 2}}})
    g = g.save_pretrained(tmp_path / "g")
    monkeypatch.chdir(script.parents[1])
    argv = ["x", "--prompts", "prompts/dense_6to8_200.json", "--graph", str(g), "--judge", str(tiny_judge_dir),
            "--n", "2", "--cond-steps", "2", "--cond-size", "16"]  # fmt: skip
    monkeypatch.setattr("sys.argv", [*argv, "--n-prompts", "2", "--out", str(tmp_path / "o")])
    capsys.readouterr()
    runpy.run_path(str(script), run_name="__main__")
    out = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert out["prompts"] == 2 and set(out["final_image_recall"]) == {"plain", "plain_split", "tidy", "tidy_split"}
    assert saved["summary"] == out and len(saved["rows"]) == 2 and (tmp_path / "o" / "sheet.png").exists()
    assert out["map_recall"]["tidy"] <= out["map_recall"]["plain"]  # tidying never adds an object
    for bad, said in ((["--keep", "1.5"], "--keep must be"), (["--n", "0"], "--n must be"),
                      (["--out", str(tmp_path / "o")], "already holds")):  # clear errors; a finished run is kept
        monkeypatch.setattr("sys.argv", [*argv, "--n-prompts", "1", "--out", str(tmp_path / "e"), *bad])
        with pytest.raises(SystemExit):
            runpy.run_path(str(script), run_name="__main__")
        assert said in capsys.readouterr().err

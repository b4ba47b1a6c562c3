"""FG-DM's quality table (`fgdm eval fgdm`): configurations, factor swapping, consistency on known
cases, and the resumable runner end to end on a tiny random graph."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fgdm.cli import main
from fgdm.eval.fgdm_quality import configurations, consistency, default_sets, object_counts
from fgdm.world.categories import NUM_CLASSES, VOID_ID, category
from fgdm.world.conditions import encode_segmentation

GRAPH = {"factors": {
    "seg": {"steps": 2},
    "depth": {"parents": ["seg"], "steps": 2},
    "image": {"kind": "controlnet", "parents": ["seg", "depth"], "steps": 2},
    "normal": {"parents": ["depth"], "steps": 2},
}}  # fmt: skip


def test_default_sets_and_configurations(random_graph):
    g = random_graph(GRAPH)
    sets = default_sets(g)
    assert sets == [["seg", "image"], ["depth", "image"], ["normal"], list(g.spec.factors)]  # the whole graph last
    assert sorted(sets[-1]) == ["depth", "image", "normal", "seg"]
    rows = configurations(sets[:3], ["joint", "ancestral"], [("no-distill", ["seg"])])
    assert [r["config"] for r in rows] == [
        "base",
        "FG-DM seg,image joint", "FG-DM seg,image ancestral", "FG-DM seg,image joint no-distill",
        "FG-DM depth,image joint", "FG-DM depth,image ancestral",
        "FG-DM normal joint",  # one factor: joint and ancestral are the same thing
    ]  # fmt: skip


def test_with_factors_from_swaps_only_the_named_factor(random_graph):
    g = random_graph(GRAPH, seed=0)
    other = random_graph({"factors": {"seg": {"steps": 2}}}, seed=1)
    assert g.differing_factors(other) == ["seg"]  # no sources recorded: all of its factors
    mixed = g.with_factors_from(other)
    assert mixed.modules["seg"] is other.modules["seg"]
    assert all(mixed.modules[n] is g.modules[n] for n in ("depth", "image", "normal"))
    a = g("a dog", factors=["seg"], seed=3).maps["seg"][0]
    b = mixed("a dog", factors=["seg"], seed=3).maps["seg"][0]
    assert not np.array_equal(a, b)
    wrong = random_graph({"factors": {"seg": {"steps": 2}, "depth": {"steps": 2}}}, seed=1)  # depth without parent
    with pytest.raises(ValueError, match="depth"):
        g.with_factors_from(wrong)


def test_assemble_graph_takes_a_factor_from_another_graph(random_graph, tmp_path, capsys):
    """`fgdm train assemble-graph --take seg=OTHER`: a from-scratch seg factor joins a graph's image
    factor (trained on real maps, so it serves any seg factor); the graph records where each came from."""
    g = random_graph(GRAPH, seed=0)
    g.spec.info["sources"] = {n: f"/runs/{n}" for n in g.spec.factors}
    other = random_graph({"factors": {"seg": {"kind": "scratch", "size": 16, "steps": 3, "guidance": 2.0}}}, seed=5)
    other.spec.info["sources"] = {"seg": "/runs/seg_scratch"}
    g.save_pretrained(tmp_path / "g")
    other.save_pretrained(tmp_path / "o")
    out = tmp_path / "mixed"
    args = ["train", "assemble-graph", "--graph", str(tmp_path / "g"), "--take", f"seg={tmp_path / 'o'}", "--fp32"]
    assert main([*args, "--out", str(out)]) == 0
    assert "seg from" in capsys.readouterr().out
    from fgdm.pipelines.factor_graph import FactorGraphPipeline

    mixed = FactorGraphPipeline.from_pretrained(out)
    seg = mixed.spec.factors["seg"]
    assert (seg.kind, seg.size, seg.steps, seg.guidance) == ("scratch", 16, 3, 2.0)
    assert mixed.spec.info["sources"] == {**g.spec.info["sources"], "seg": "/runs/seg_scratch"}
    for name, src in (("seg", other), ("depth", g), ("image", g)):
        want = src.modules[name].state_dict()
        assert all(torch.equal(v, want[k]) for k, v in mixed.modules[name].state_dict().items()), name
    a = mixed("a dog", factors=["seg"], seed=2).latents["seg"]
    b = other("a dog", factors=["seg"], seed=2).latents["seg"]
    assert torch.allclose(a, b, atol=1e-5)
    # bad input: the argument's form, a factor the other graph lacks, a folder that holds no graph
    for take, msg in (("seg", "FACTOR=GRAPH_FOLDER"), (f"depth={tmp_path / 'o'}", "must be in both graphs"),
                      (f"seg={tmp_path / 'none'}", "--take")):  # fmt: skip
        assert main(["train", "assemble-graph", "--graph", str(tmp_path / "g"), "--take", take,
                     "--out", str(tmp_path / "x")]) == 2  # fmt: skip
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_adapter_image_factor_can_stand_in_for_the_controlnet(random_graph):
    """The budget comparison: same parents, another kind."""
    g = random_graph(GRAPH, seed=0)
    alt_spec = {"factors": {**GRAPH["factors"], "image": {"kind": "adapter", "parents": ["seg", "depth"], "steps": 2}}}
    alt = random_graph(alt_spec, seed=2)
    g.spec.info["sources"] = {n: f"/runs/{n}" for n in g.spec.factors}
    alt.spec.info["sources"] = {**g.spec.info["sources"], "image": "/runs/image_adapter"}
    assert g.differing_factors(alt) == ["image"]  # seg/depth/normal are the same runs' copies
    mixed = g.with_factors_from(alt, ["image"])
    assert mixed.spec.factors["image"].kind == "adapter" and g.spec.factors["image"].kind == "controlnet"
    assert mixed.modules["seg"] is g.modules["seg"] and mixed.modules["image"] is alt.modules["image"]
    out = mixed("a dog", factors=["seg", "depth", "image"], seed=1)
    assert out.images[0].size == (32, 32)


class _Oracle(torch.nn.Module):
    """A judge that 'sees' a fixed label map and a fixed depth, whatever the image."""

    def __init__(self, labels: np.ndarray, depth: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.labels, self.depth = torch.from_numpy(labels.astype(np.int64)), depth

    def forward(self, x):
        b, _, h, w = x.shape
        logits = torch.nn.functional.one_hot(self.labels, NUM_CLASSES).permute(2, 0, 1).float()
        return logits[None].expand(b, -1, -1, -1), torch.full((b, 1, h, w), self.depth)

    predict = forward  # what measurements read (Judge.predict)


def test_consistency_on_known_maps():
    seen = np.full((32, 32), category("grass").id, np.uint8)
    seen[8:20, 8:20] = category("dog").id
    images = [np.zeros((32, 32, 3), np.uint8)] * 2
    depth_half = np.full((32, 32, 3), 128, np.uint8)
    same = consistency(_Oracle(seen, 128 / 255), images, [encode_segmentation(seen)] * 2, [depth_half] * 2)
    assert same == {"consistency_miou": 1.0, "consistency_pixel_acc": 1.0, "seg_void_fraction": 0.0,
                    "consistency_depth_mae": 0.0, "consistency_depth_mae_shuffled": 0.0}
    other = seen.copy()
    other[8:20, 8:20] = category("cat").id  # the map says cat where the judge sees a dog
    r = consistency(_Oracle(seen, 1.0), images, [encode_segmentation(other)] * 2, [depth_half] * 2)
    # classes grass (IoU 1), dog (0) and cat (0): mIoU 1/3; depth 1.0 vs 128/255
    assert r["consistency_miou"] == pytest.approx(1 / 3, abs=1e-4)
    assert r["consistency_pixel_acc"] == pytest.approx(1 - 144 / 1024, abs=1e-4)  # all but the 12x12 square
    # maps already decoded to class ids score the same as their palette images
    assert consistency(_Oracle(seen, 1.0), images, [other] * 2, [depth_half] * 2) == r
    assert r["consistency_depth_mae"] == pytest.approx(1 - 128 / 255, abs=1e-3)
    # the judge's depth is read at the map's size antialiased: a fine 48-px checkerboard is 0.5 at 16 px
    # (sampled without antialiasing, every 16-px pixel would land on one square: MAE 0.5)
    checker = torch.from_numpy(np.indices((48, 48)).sum(0) % 2).float()[None, None].expand(2, 1, 48, 48)
    grey = np.full((16, 16, 3), 128, np.uint8)
    r = consistency(None, [np.zeros((48, 48, 3), np.uint8)] * 2, None, [grey, np.zeros_like(grey)],
                    seen=(np.zeros((2, 48, 48), np.uint8), checker))  # fmt: skip
    assert r["consistency_depth_mae"] == pytest.approx(((128 / 255 - 0.5) + 0.5) / 2, abs=0.02)
    assert r["consistency_depth_mae_shuffled"] == pytest.approx(r["consistency_depth_mae"], abs=1e-6)  # two swapped
    half = np.full((16, 16), category("grass").id, np.uint8)  # maps at a smaller size than the images
    assert consistency(_Oracle(np.full((32, 32), category("grass").id, np.uint8), 0.0), images,
                       [encode_segmentation(half)] * 2, None) == {"consistency_miou": 1.0, "consistency_pixel_acc": 1.0,
                                                                  "seg_void_fraction": 0.0}  # fmt: skip
    # a sampled map that is partly black (void): those pixels are not scored, whatever the judge sees there;
    # with one class left this also decodes (it used to fail in the decoder's unblending)
    holed = np.full((32, 32), category("grass").id, np.uint8)
    holed[:8] = VOID_ID
    r = consistency(_Oracle(seen, 0.0), images, [encode_segmentation(holed)] * 2, None)
    assert r["seg_void_fraction"] == 0.25
    # grass: judge 32*32 - 144 pixels, map 768 known pixels; the dog square lies inside the known rows
    assert r["consistency_miou"] == pytest.approx(((768 - 144) / 768 + 0) / 2, abs=1e-4)
    assert r["consistency_pixel_acc"] == pytest.approx((768 - 144) / 768, abs=1e-4)  # of the known pixels


def test_consistency_of_sketch_and_normal_maps():
    """A sketch map is scored against the image's own sketch (the judge's classes for its label maps),
    a normal map against the normals of the judge's depth; each also against the next image's map."""
    from fgdm.world.conditions import encode_normals, encode_sketch
    from fgdm.world.render import sketch_from

    seen = np.full((32, 32), category("grass").id, np.uint8)
    seen[8:20, 8:20] = category("dog").id
    images = [np.zeros((32, 32, 3), np.uint8)] * 2
    own = encode_sketch(sketch_from(images[0], [seen]))  # the outline of the square the judge sees
    moved = encode_sketch(sketch_from(images[0], [np.roll(seen, 10, axis=1)]))
    up = np.zeros((16, 16, 3), np.float32)  # a flat depth has normals (0, 0, 1); maps at half the size
    up[..., 2] = 1
    tilt = up.copy()
    tilt[..., 0] = tilt[..., 2] = np.sqrt(0.5)
    judge = _Oracle(seen, 0.5)
    r = consistency(judge, images, None, None, sketch_maps=[own, moved], normal_maps=[encode_normals(up), encode_normals(tilt)])
    alone = consistency(judge, images[:1], None, None, sketch_maps=[own], normal_maps=[encode_normals(up)])
    assert alone["consistency_sketch_corr"] > 0.99 and alone["consistency_sketch_corr_shuffled"] is None
    assert alone["consistency_normal_deg"] < 1 and alone["consistency_normal_deg_shuffled"] is None
    assert r["consistency_sketch_corr"] < 0.75 * alone["consistency_sketch_corr"]  # the moved square's outline is off
    assert r["consistency_normal_deg"] == pytest.approx(45 / 2, abs=1)  # one map right, one tilted by 45 degrees
    assert r["consistency_normal_deg_shuffled"] == pytest.approx(45 / 2, abs=1)
    assert set(r) == {"consistency_sketch_corr", "consistency_sketch_corr_shuffled",
                      "consistency_normal_deg", "consistency_normal_deg_shuffled"}  # fmt: skip


def test_object_counts_on_known_maps():
    grass, dog, cat = (category(n).id for n in ("grass", "dog", "cat"))
    a = np.full((100, 100), grass, np.uint8)
    a[10:30, 10:30] = dog  # 4%: present
    b = a.copy()
    b[50:52, 50:52] = cat  # 0.04%: a speck, below the 0.3% presence area
    c = b.copy()
    c[60:70, 60:70] = cat  # 1%: present
    got = object_counts([a, b, c], [("dog", "cat"), ("dog", "cat"), ("dog", "cat")], "seg")
    assert got == {"seg_object_recall": pytest.approx((0.5 + 0.5 + 1) / 3, abs=1e-4), "seg_things_per_map": pytest.approx(4 / 3, abs=1e-3)}
    # a prompt naming no known object is not scored; its map still counts its things
    assert object_counts([c, a], [(), ("cat",)], "image") == {"image_object_recall": 0.0, "image_things_per_map": 1.5}
    assert object_counts([a], [()], "seg")["seg_object_recall"] is None


def test_eval_fgdm_runs_every_configuration_and_resumes(random_graph, tiny_clip_dir, tiny_judge_dir, tmp_path, capsys):
    g = random_graph(GRAPH).save_pretrained(tmp_path / "g")
    abl = random_graph({"factors": {"seg": {"steps": 2}}}, seed=7).save_pretrained(tmp_path / "g_nodistill")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat\na bus on a road\n")
    out = tmp_path / "run"
    argv = ["eval", "fgdm", "--prompts", str(prompts), "--graph", str(g), "--clip", str(tiny_clip_dir),
            "--judge", str(tiny_judge_dir), "--ablation", f"no-distill={abl}", "--sets", "seg,image;normal",
            "--images-per-prompt", "2", "--steps", "2", "--n-real", "6", "--out", str(out), "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["config"] for r in rows] == ["base", "FG-DM seg,image joint", "FG-DM seg,image ancestral",
                                           "FG-DM seg,image joint no-distill", "FG-DM normal joint"]  # fmt: skip
    by = {r["config"]: r for r in rows}
    assert all(r["prompts"] == 2 and r["samples"] == 4 and r["seconds_per_image"] > 0 for r in rows)
    assert by["base"]["image_fd"] >= 0 and 0 <= by["base"]["image_precision"] <= 1 and "seg_fd" not in by["base"]
    joint = by["FG-DM seg,image joint"]
    assert {"image_fd", "clip_score", "seg_fd", "seg_precision", "seg_recall", "consistency_miou"} <= set(joint)
    assert 0 <= joint["consistency_miou"] <= 1 and "consistency_depth_mae" not in joint
    assert 0 <= joint["seg_object_recall"] <= 1 and joint["seg_things_per_map"] >= 0
    assert 0 <= joint["seg_palette_fit"] <= 1 and 0 <= joint["consistency_pixel_acc"] <= 1
    cached = json.loads((out / "samples" / "FG-DM_seg_image_joint" / "p00000.json").read_text())
    assert len(cached["palette_fit"]) == 2 and "seg_palette_fit" not in by["base"]
    assert 0 <= by["base"]["image_object_recall"] <= 1 and "seg_object_recall" not in by["base"]
    vs = by["FG-DM seg,image joint no-distill"]["seg_object_recall_vs_main"]
    assert vs["better"] + vs["worse"] <= 4 and 0 < vs["p"] <= 1 and "seg_object_recall_vs_main" not in joint
    assert "image_fd" not in by["FG-DM normal joint"] and by["FG-DM normal joint"]["normal_fd"] >= 0
    # the ablation row differs from the joint row only by its seg factor: different maps
    seg_joint = (out / "samples" / "FG-DM_seg_image_joint" / "p00000-0-seg.png").read_bytes()
    seg_abl = (out / "samples" / "FG-DM_seg_image_joint_no-distill" / "p00000-0-seg.png").read_bytes()
    assert seg_joint != seg_abl
    assert (out / "table.md").read_text().startswith("| config") and (out / "sheet.png").exists()
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "done" and record["settings"]["reference"] == "prompts"
    stamp = {f: f.stat().st_mtime_ns for f in (out / "samples").rglob("*.json")}
    assert main([*argv, "--resume"]) == 0  # nothing is sampled again, the same table comes out
    assert {f: f.stat().st_mtime_ns for f in (out / "samples").rglob("*.json")} == stamp
    assert json.loads(capsys.readouterr().out) == rows
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    bad = ["eval", "fgdm", "--prompts", str(prompts), "--graph", str(g), "--clip", str(tiny_clip_dir), "--no-judge",
           "--sets", "seg,sky", "--out", str(tmp_path / "bad")]  # fmt: skip
    assert main(bad) == 2 and "sky" in capsys.readouterr().err
    assert main([*bad[:-4], "--ablation", str(abl), "--out", str(tmp_path / "bad2")]) == 2
    assert "LABEL=GRAPH_DIR" in capsys.readouterr().err


def test_image_factor_follows_map_script(random_graph, tiny_judge_dir, tmp_path, capsys, monkeypatch):
    """scripts/image_factor_follows_map.py (a figure in results.md): real maps in, two consistency rows out."""
    import runpy
    from pathlib import Path

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "image_factor_follows_map.py")
    g = random_graph(GRAPH).save_pretrained(tmp_path / "g")
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), "--n", "2", "--judge", str(tiny_judge_dir)])
    runpy.run_path(script, run_name="__main__")
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 2 and set(r["rows"]) == {"image factor, given the map", "base model, caption only"}
    assert all(0 <= row["consistency_miou"] <= 1 and row["seg_void_fraction"] == 0 for row in r["rows"].values())
    assert all(0 <= row["image_object_recall"] <= 1 and "seg_palette_fit" not in row for row in r["rows"].values())
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), "--n", "2", "--judge", str(tiny_judge_dir), "--sampled"])
    runpy.run_path(script, run_name="__main__")
    rows = json.loads(capsys.readouterr().out)["rows"]
    sampled = ["joint (seg, image)", "ancestral (seg, image)", "sampled map, re-painted"]
    assert list(rows) == ["image factor, given the map", "base model, caption only", *sampled]
    assert all(0 <= rows[k]["seg_palette_fit"] <= 1 and 0 <= rows[k]["consistency_pixel_acc"] <= 1 for k in sampled)
    # the root seg factor samples the same map in every mode: the same fits
    assert rows[sampled[0]]["seg_palette_fit"] == rows[sampled[1]]["seg_palette_fit"] == rows[sampled[2]]["seg_palette_fit"]
    # --cond depth: the depth map alone and with seg; every row given a real map is scored on depth too
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), "--n", "2", "--judge", str(tiny_judge_dir), "--cond", "depth"])
    runpy.run_path(script, run_name="__main__")
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert list(rows) == ["image factor, given the map", "base model, caption only", "image factor, given depth",
                          "image factor, given seg and depth"]  # fmt: skip
    assert all(0 <= row["consistency_depth_mae"] <= 1 and "consistency_sketch_corr" not in row for row in rows.values())
    # --cond sketch normal: scored on the image's own sketch and the normals of the judge's depth
    sn = random_graph({"factors": {"seg": {"steps": 2}, "sketch": {"parents": ["seg"], "steps": 2},
                                   "normal": {"parents": ["seg"], "steps": 2},
                                   "image": {"parents": ["seg", "sketch", "normal"], "steps": 2}}})  # fmt: skip
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(sn.save_pretrained(tmp_path / "sn")), "--n", "2",
                                     "--judge", str(tiny_judge_dir), "--cond", "sketch", "normal"])  # fmt: skip
    runpy.run_path(script, run_name="__main__")
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert list(rows) == ["image factor, given the map", "base model, caption only", "image factor, given sketch",
                          "image factor, given seg and sketch", "image factor, given normal",
                          "image factor, given seg and normal"]  # fmt: skip
    assert all(-1 <= row["consistency_sketch_corr_shuffled"] <= 1 and 0 <= row["consistency_normal_deg"] <= 180
               and "consistency_depth_mae" not in row for row in rows.values())  # fmt: skip
    # every option at once: each row keeps its own name (--sampled's rows once took --depth's names)
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), "--n", "1", "--judge", str(tiny_judge_dir), "--cond", "depth",
                                     "--neutral", "--sampled"])  # fmt: skip
    runpy.run_path(script, run_name="__main__")
    rows = json.loads(capsys.readouterr().out)["rows"]
    neutral = ["image factor, given the map, caption 'a scene.'", "base model, caption 'a scene.'"]
    assert list(rows) == ["image factor, given the map", "base model, caption only", "image factor, given depth",
                          "image factor, given seg and depth", *neutral, *sampled]  # fmt: skip
    assert all("seg_palette_fit" in rows[k] for k in sampled) and not any("seg_palette_fit" in rows[k] for k in neutral)
    # --prompts: scenes rendered from a prompt file (as fgdm eval sbpc's real-render row), prompts without
    # a known object left out; too few of them is an argument error
    pf = tmp_path / "p.txt"
    pf.write_text("a dog and a cat on the grass\na painting of nothing\na bus, a car and a person\n")
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), "--n", "2", "--judge", str(tiny_judge_dir),
                                     "--prompts", str(pf)])  # fmt: skip
    runpy.run_path(script, run_name="__main__")
    r = json.loads(capsys.readouterr().out)
    assert r["prompts"] == str(pf) and "world_seed" not in r and len(r["rows"]) == 2
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), "--n", "3", "--prompts", str(pf)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 2 and "has 2 prompts naming known objects, fewer than --n 3" in capsys.readouterr().err
    seg_only = random_graph({"factors": {"seg": {"steps": 2}, "image": {"parents": ["seg"], "steps": 2}}})
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(seg_only.save_pretrained(tmp_path / "so")), "--n", "2",
                                     "--cond", "depth", "normal"])  # fmt: skip
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 2 and "not conditioned on depth, normal (its parents: ['seg'])" in capsys.readouterr().err
    no_image = random_graph({"factors": {"seg": {"steps": 2}}}).save_pretrained(tmp_path / "s")
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(no_image), "--n", "2"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 2 and "no image factor" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(tmp_path / "missing"), "--n", "2"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_sign_test_known_splits():
    from fgdm.eval.metrics import sign_test

    assert sign_test([0, 0, 0], [0, 0, 0]) == {"better": 0, "worse": 0, "p": 1.0}  # all ties
    assert sign_test([0] * 6, [1] * 6) == {"better": 6, "worse": 0, "p": pytest.approx(2 / 64)}
    assert sign_test([0.5, 0.5, 1.0, 0.2], [1.0, 0.0, 1.0, 0.1]) == {"better": 1, "worse": 2, "p": 1.0}
    with pytest.raises(ValueError, match="equal lengths"):
        sign_test([1], [1, 2])


def test_real_reference_renders_the_prompts_or_the_world():
    """The reference of `eval fgdm` (and `eval quality`): renders of the prompts, each holding
    its objects in the true map (prompt i mod P), or held-out renders of the world at large."""
    from fgdm.eval.fgdm_quality import real_reference
    from fgdm.world.categories import category
    from fgdm.world.conditions import decode_segmentation

    ref = real_reference(4, 64, ["seg"], 7, ["a photo of a dog", "a cat and a bus on the road"])
    assert len(ref["image"]) == len(ref["seg"]) == 4
    ids = [set(np.unique(decode_segmentation(m))) for m in ref["seg"]]
    for i, names in enumerate([("dog",), ("cat", "bus", "road"), ("dog",), ("cat", "bus", "road")]):
        assert {category(n).id for n in names} <= ids[i], (i, names)
    assert not np.array_equal(ref["image"][0], ref["image"][2])  # same prompt, another seed
    world = real_reference(4, 64, [], 7)
    assert list(world) == ["image"] and not np.array_equal(world["image"][0], ref["image"][0])
    with pytest.raises(ValueError, match="name none"):
        real_reference(2, 64, [], 7, ["a snowy landscape"])


def test_condition_factor_fit_script(random_graph, tmp_path, capsys, monkeypatch):
    """scripts/condition_factor_fit.py (figures in results.md): sampled depth, sketch or normals
    against the renders' own, given seg and from the caption alone, beside the two chance levels."""
    import runpy
    from pathlib import Path

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "condition_factor_fit.py")
    g = random_graph(GRAPH).save_pretrained(tmp_path / "g")
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), "--n", "3", "--guidance", "1", "2"])
    runpy.run_path(script, run_name="__main__")
    r = json.loads(capsys.readouterr().out)
    assert r["variable"] == "depth" and r["n"] == 3 and r["steps"] == 2 and r["eta"] == 0
    assert list(r["rows"]) == ["mean map (no model)", "given seg, guidance 1", "given seg, guidance 1, shuffled (chance)",
                               "caption only, guidance 1", "given seg, guidance 2",
                               "given seg, guidance 2, shuffled (chance)", "caption only, guidance 2"]  # fmt: skip
    assert all(0 <= row["mae"] <= 1 for row in r["rows"].values())
    assert r["rows"]["given seg, guidance 1"]["seconds_per_map"] > 0
    both = random_graph({"factors": {"seg": {"steps": 2}, "sketch": {"parents": ["seg"], "steps": 2},
                                     "normal": {"parents": ["seg"], "steps": 2}}}).save_pretrained(tmp_path / "sn")  # fmt: skip
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(both), "--variable", "normal", "--n", "2"])
    runpy.run_path(script, run_name="__main__")
    r = json.loads(capsys.readouterr().out)
    assert r["variable"] == "normal" and len(r["rows"]) == 4
    assert all(0 <= row["deg"] <= 180 and 0 <= row["within_11"] <= 1 for row in r["rows"].values())
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(both), "--variable", "sketch", "--n", "2"])
    runpy.run_path(script, run_name="__main__")
    assert all(0 <= row["mae"] <= 1 for row in json.loads(capsys.readouterr().out)["rows"].values())
    for argv, err in ((["--n", "1"], "--n must be >= 2"), (["--steps", "0"], "--steps must be >= 1"),
                      (["--eta", "2"], "--eta must be in [0, 1]"), (["--variable", "image"], "invalid choice: 'image'")):
        monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), *argv])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 2 and err in capsys.readouterr().err
    # a factor with another parent gets that real map: GRAPH's normal factor reads depth
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(g), "--variable", "normal", "--n", "2"])
    runpy.run_path(script, run_name="__main__")
    assert list(json.loads(capsys.readouterr().out)["rows"]) == [
        "mean map (no model)", "given depth, guidance 7.5", "given depth, guidance 7.5, shuffled (chance)",
        "caption only, guidance 7.5"]  # fmt: skip
    no_depth = random_graph({"factors": {"seg": {"steps": 2}}}).save_pretrained(tmp_path / "s")
    for var in ("depth", "sketch"):
        monkeypatch.setattr("sys.argv", ["x", "--graph", str(no_depth), "--variable", var])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 2 and f"no {var} factor conditioned on another map" in capsys.readouterr().err


def test_each_map_is_measured_against_renders_of_its_own_size(tiny_clip_dir, tmp_path):
    """A seg map sampled at 64 px beside a 128-px image is compared with 64-px renders' seg maps
    (and the image with 128-px renders), whatever size the other rows drew at."""
    from PIL import Image

    from fgdm.eval.fgdm_quality import _distribution, _slug, _unit, markdown_table, measure, real_reference, render_px
    from fgdm.eval.quality import MiniCLIPFeatures

    prompts = ["a photo of a dog", "a cat and a bus on the road"]
    world = real_reference(2, 128, ["seg"], 3, prompts)
    small = real_reference(2, 64, ["seg"], 3, prompts)
    configs = [{"config": "base", "kind": "base"},
               {"config": "FG-DM seg,image joint", "kind": "fgdm", "factors": ["seg", "image"], "mode": "joint"}]  # fmt: skip
    for cfg, maps in [("base", {"image": world["image"]}),
                      ("FG-DM seg,image joint", {"image": world["image"][::-1], "seg": small["seg"][::-1]})]:  # fmt: skip
        folder = tmp_path / "samples" / _slug(cfg)
        folder.mkdir(parents=True)
        for p, text in enumerate(prompts):
            files = {}
            for key, ms in maps.items():
                Image.fromarray(ms[p]).save(folder / f"p{p:05d}-0-{key}.png")
                files[key] = [f"p{p:05d}-0-{key}.png"]
            (folder / f"p{p:05d}.json").write_text(json.dumps({"prompt": text, "config": cfg, "seconds": 1.0,
                                                               "samples": 1, "files": files}))  # fmt: skip
    clip = MiniCLIPFeatures(tiny_clip_dir)
    rows = measure(tmp_path, configs, prompts, clip, n_real=4, real_seed=11)
    assert [r["reference_px"] for r in rows] == [{"image": 128}, {"image": 128, "seg": 64}]
    ref = {px: real_reference(4, px, ["seg"], 11, prompts) for px in (64, 128)}
    fake = _unit([small["seg"][1], small["seg"][0]])
    assert rows[1]["seg_fd"] == _distribution(_unit(ref[64]["seg"]), fake, clip, "seg")["seg_fd"]
    assert rows[1]["seg_fd"] != _distribution(_unit(ref[128]["seg"]), fake, clip, "seg")["seg_fd"]
    assert rows[0]["image_fd"] == _distribution(_unit(ref[128]["image"]), _unit(world["image"]), clip, "image")["image_fd"]
    assert "| image 128, seg 64 |" in markdown_table(rows)
    assert [render_px(s) for s in (32, 64, 100, 128, 1024)] == [64, 64, 96, 128, 512]


def test_map_text_probe_chunks(random_graph, tiny_judge_dir, tmp_path, capsys, monkeypatch):
    """scripts/map_text_probe.py's prompt chunking and bands (figures in results.md): the chunks'
    captions, their concatenated text states, the banded UNet's blend, every new arm, and bad arms as
    clear errors."""
    import importlib.util
    import runpy
    from pathlib import Path

    from fgdm.compliance.recall import VERDICTS
    from fgdm.pipelines import split as objsplit

    script = Path(__file__).resolve().parents[1] / "scripts" / "map_text_probe.py"
    spec = importlib.util.spec_from_file_location("mtp", script)
    mtp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mtp)
    prompt = "a scene with a banana, a surfboard, a giraffe, an elephant and a bus."
    objects = ["banana", "surfboard", "giraffe", "elephant", "bus"]
    assert mtp.chunk_captions(prompt, objects, 2) == ["a scene with a banana, a surfboard and a giraffe.",
                                                      "a scene with an elephant and a bus."]  # fmt: skip
    assert mtp.chunk_captions("a photo of a cat and a dog.", ["cat", "dog"], 3) == ["a photo of a cat.", "a photo of a dog."]
    g = random_graph({"factors": {"seg": {"steps": 2}, "image": {"parents": ["seg"], "steps": 2}}})
    base = g.base
    chunks = mtp.chunk_captions(prompt, objects, 2)
    plain, _ = base.encode_text(chunks)
    with mtp.chunked_text(base, {prompt: chunks}):
        (emb, tokens), (empty, _) = base.encode_text([prompt, prompt]), base.encode_text([""], allow_empty=True)
        with pytest.raises(ValueError, match="no chunks"):
            base.encode_text(["a dog"])
    t = plain.shape[1]
    assert emb.shape == (2, 2 * t, plain.shape[2]) and len(tokens[0]) == 2 * t
    assert torch.equal(emb[0, :t], plain[0]) and torch.equal(emb[1, t:], plain[1])  # each chunk as encoded alone
    assert empty.shape == (1, 2 * t, plain.shape[2]) and torch.equal(empty[0, :t], empty[0, t:])  # K empty captions
    assert base.encode_text([prompt])[0].shape[1] == t  # the class's method again after the block
    assert mtp.parse_arms("none,chunks:2,base,base-chunks:3") == [("none", 0), ("chunks", 2), ("base", 0), ("base-chunks", 3)]
    assert mtp.parse_arms("bands:2,base-bands:3,masks:0.3,split:0") == [("bands", 2), ("base-bands", 3), ("masks", 0.3), ("split", 0)]
    assert mtp.parse_arms("split-early:0.4,split-late:1") == [("split-early", 0.4), ("split-late", 1)]
    for bad in ("chunks:1", "chunks:2.5", "base-chunks", "bias:-1", "bands:1", "base-bands:x", "masks:1.5", "masks", "split:2",
                "split-early:0", "split-late:1.5", "split-early"):
        with pytest.raises(SystemExit, match="--arms"):
            mtp.parse_arms(bad)
    # bands: weights that sum to 1 in every column; objects to the band holding most of their class
    for k, w in ((2, 8), (3, 16)):
        m = mtp.band_masks(k, w, ramp=1)
        assert m.shape == (k, w) and torch.allclose(m.sum(0), torch.ones(w)) and m.min() >= 0
        assert m[0, 0] == 1 and m[-1, -1] == 1
    seg = np.zeros((8, 8), dtype=np.int64)
    seg[:, :3], seg[:, 5:] = category("dog").id, category("cat").id
    assert mtp.band_groups(["cat", "dog", "bus"], 2, seg) == [["dog", "bus"], ["cat"]]  # bus: not in the map
    assert mtp.band_groups(["cat", "dog", "bus"], 2, None) == [["cat", "dog"], ["bus"]]
    assert mtp.group_caption(prompt, []) == mtp.EMPTY_BAND
    # object masks: the whole prompt outside the objects, each shown object's own caption on its region
    shown, om = objsplit.object_masks(["cat", "dog", "bus", "cat"], seg, 8, 0.0)
    assert shown == ["cat", "dog"] and om.shape == (3, 8, 8) and torch.allclose(om.sum(0), torch.ones(8, 8))
    assert (om[1, :, 5:] == 1).all() and (om[2, :, :3] == 1).all() and (om[0, :, 3:5] == 1).all() and om[0, :, :3].sum() == 0
    _, half = objsplit.object_masks(["cat", "dog"], seg, 4, 0.5)  # a coarser grid: class shares per cell
    assert torch.allclose(half.sum(0), torch.ones(4, 4)) and torch.allclose(half[0, :, 0], torch.full((4,), 0.5))
    assert torch.allclose(half[2, :, 1], torch.full((4,), 0.25))  # a cell half dog: half of the dog's 1 - W
    assert objsplit.object_masks(["bus"], seg, 8, 0.0)[0] == [] and torch.equal(objsplit.object_masks(["bus"], seg, 8, 0.0)[1], torch.ones(1, 8, 8))
    # the banded UNet: the same caption in every band is the plain prediction; one-hot bands take each caption's
    x, ts = torch.randn(1, 4, 8, 8), torch.tensor([500])
    ctx = base.encode_text(["a dog", "a cat"])[0]
    with torch.no_grad():
        plain_dog, plain_cat = (base.unet(x, ts, encoder_hidden_states=c[None]).sample for c in ctx)
        with mtp.banded_unet(base.unet, mtp.band_masks(2, 8), t):
            same = base.unet(x, ts, encoder_hidden_states=torch.cat([ctx[0], ctx[0]])[None]).sample
        hard = torch.tensor([[1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4])
        with mtp.banded_unet(base.unet, hard, t):
            split = base.unet(x, ts, encoder_hidden_states=torch.cat([ctx[0], ctx[1]])[None]).sample
            with pytest.raises(ValueError, match="masks of shape"):
                base.unet(x, ts, encoder_hidden_states=torch.cat([ctx[0], ctx[1], ctx[1]])[None])
        top = torch.zeros(2, 8, 8)
        top[0, :4], top[1, 4:] = 1, 1  # (k, H, W): the dog's caption in the top half, the cat's below
        with mtp.banded_unet(base.unet, top, t):
            halves = base.unet(x, ts, encoder_hidden_states=torch.cat([ctx[0], ctx[1]])[None]).sample
    assert torch.allclose(same, plain_dog, atol=1e-5)
    assert torch.allclose(halves[..., :4, :], plain_dog[..., :4, :], atol=1e-5)
    assert torch.allclose(halves[..., 4:, :], plain_cat[..., 4:, :], atol=1e-5)
    # split: each object's pass sees it alone in its map; the rows of a group share one blended prediction
    grass = category("grass").id
    scene = np.where(seg == 0, grass, seg)
    scene[0, 3] = 0  # a speck of another thing class (id 0)
    alone = objsplit.object_alone(scene, "dog")
    assert (alone == np.where(np.isin(scene, [category("cat").id, 0]), grass, scene)).all() and (alone[:, :3] == category("dog").id).all()
    with torch.no_grad():
        xx, tt, cc = x.repeat(4, 1, 1, 1), ts.repeat(4), torch.cat([ctx, ctx])  # 2 blocks of the 2 captions (dog, cat)
        with objsplit.blended_rows(base.unet, top):
            rowsout = base.unet(xx, tt, encoder_hidden_states=cc).sample
            with pytest.raises(ValueError, match="blended_rows"):
                base.unet(xx[:3], tt[:3], encoder_hidden_states=cc[:3])
    assert all(torch.allclose(r, halves[0], atol=1e-5) for r in rowsout)
    assert "forward" not in vars(base.unet)
    assert torch.allclose(split[..., :4], plain_dog[..., :4], atol=1e-5) and torch.allclose(split[..., 4:], plain_cat[..., 4:], atol=1e-5)
    assert "forward" not in vars(base.unet)  # the module's own forward again after the block
    # the whole script on the tiny graph: every arm scored, chunked arms against their own reference
    gdir = g.save_pretrained(tmp_path / "g")
    args = ["x", "--prompts", "prompts/dense_6to8_200.json", "--n-prompts", "1", "--graph", str(gdir),
            "--judge", str(tiny_judge_dir), "--out", str(tmp_path / "run")]  # fmt: skip
    monkeypatch.chdir(script.parents[1])
    monkeypatch.setattr("sys.argv", [*args, "--arms", "none,base-chunks:2"])
    with pytest.raises(SystemExit, match="add the arm base"):
        runpy.run_path(str(script), run_name="__main__")
    arms = ["none", "chunks:2", "bands:2", "masks:0.5", "split:0", "split-early:0.5", "split-late:0.5", "base",
            "base-chunks:2", "base-bands:2"]  # fmt: skip
    monkeypatch.setattr("sys.argv", [*args, "--arms", ",".join(arms)])
    runpy.run_path(str(script), run_name="__main__")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["arms"]
    assert list(summary) == arms
    assert all("vs_none" in summary[a] for a in arms[1:7]) and "vs_none" not in summary["base"]
    assert all(a["seconds_per_prompt"] > 0 for a in summary.values())  # the one prompt, drawn by every arm
    assert Image.open(tmp_path / "run" / "recall.png").size == (1300, 320)
    assert "vs_base" in summary["base-chunks:2"] and "vs_base" in summary["base-bands:2"]
    assert all(0 <= a["mean_recall"] <= 1 for a in summary.values()) and (tmp_path / "run" / "sheet.png").exists()
    assert all(list(a["region"]) == list(VERDICTS) and sum(a["region"].values()) == pytest.approx(1, abs=0.01)
               for a in summary.values())  # fmt: skip
    (row,) = json.loads((tmp_path / "run" / "results.json").read_text()).values()
    assert all(len(v) == len(row["objects"]) and set(v) <= set(VERDICTS) for v in row["region"].values())
    assert len(row["areas"]) == len(row["objects"]) and all(0 <= a <= 1 for a in row["areas"])
    assert set(row["seconds"]) == set(arms)
    for a in summary.values():  # every object in one band of its area
        assert sum(n for n, _ in a["own_class_by_area"].values()) == len(row["objects"])
    capsys.readouterr()


@pytest.mark.parametrize("kind", ["adapter", "controlnet", "scratch"])
def test_split_render(random_graph, kind):
    """Object-split rendering: one row per shown object, every row the same image; with the whole
    prompt's weight 1 it is the plain image factor's image; bad input is a clear error."""
    from fgdm.pipelines.split import blended_rows, object_alone, object_caption, object_masks, split_render

    g = random_graph({"factors": {"seg": {"steps": 2}, "image": {"parents": ["seg"], "steps": 2, "kind": kind}}})
    side = g.native_size()
    seg = np.full((side, side), category("grass").id, dtype=np.int64)
    seg[: side // 2, : side // 2], seg[side // 2 :, side // 2 :] = category("dog").id, category("cat").id
    prompt = "a photo of a dog, a cat and a bus."
    out = split_render(g, prompt, seg, seed=3)
    assert len(out.images) == 3  # the whole prompt, the dog, the cat (the bus is not in the map)
    first = np.asarray(out.images[0]).astype(int)
    assert max(np.abs(first - np.asarray(im)).max() for im in out.images[1:]) <= 2  # one latent (the VAE rounds per row)
    whole = np.asarray(split_render(g, prompt, seg, seed=3, whole=1.0).images[0]).astype(int)
    plain = np.asarray(g(prompt, factors=["image"], given={"seg": seg}, seed=3).images[0]).astype(int)
    assert np.abs(whole - plain).max() <= 2 and np.abs(first - plain).max() > 2  # the split rows change the image
    assert object_caption(prompt, "elephant") == "a photo of an elephant."
    assert object_caption("dogs.", "dog") == "a photo of a dog."
    # split_steps: only the first share of the steps split, the rest row 0 alone (a third of the rows)
    target = g.modules["image"] if kind == "scratch" else g.base.unet
    seen, plain_forward = [], target.forward

    def counting(sample, *args, **kwargs):
        seen.append(sample.shape[0])
        return plain_forward(sample, *args, **kwargs)

    target.forward = counting  # blended_rows wraps it, and deletes it when done
    feats, factor = [], g.modules["image"]  # an adapter's or ControlNet's rows are cut the same way
    if kind != "scratch":
        plain_factor = factor.forward
        factor.forward = lambda x, *a, **kw: feats.append(x.shape[0]) or plain_factor(x, *a, **kw)
    early = split_render(g, prompt, seg, seed=3, steps=4, split_steps=0.5)  # the last of 2 steps is at t = 1
    assert len(seen) == 4 and seen[0] == seen[1] == 3 * seen[2] == 3 * seen[3]  # 3 rows per guidance block, then 1
    assert feats == ([] if kind == "scratch" else seen)
    assert "forward" not in vars(factor)
    early_0 = early.latents["image"][0]  # latents: the random weights' images differ by a level or two
    assert all(torch.allclose(z, early_0, atol=1e-6) for z in early.latents["image"])  # one trajectory
    split4 = split_render(g, prompt, seg, seed=3, steps=4).latents["image"][0]
    plain4 = g(prompt, factors=["image"], given={"seg": seg}, seed=3, steps={"image": 4}).latents["image"][0]
    assert (early_0 - plain4).abs().max() > 1e-3 and (early_0 - split4).abs().max() > 1e-3
    with blended_rows(target, object_masks(["dog", "cat"], seg, side // g.base.vae_scale_factor, 0.0)[1], calls=range(0)):
        none_split = g([prompt, "a photo of a dog.", "a photo of a cat."], factors=["image"],
                       given={"seg": [seg, object_alone(seg, "dog"), object_alone(seg, "cat")]}, seed=[3] * 3)  # fmt: skip
    assert np.abs(np.asarray(none_split.images[0]).astype(int) - plain).max() <= 2  # no step split: the plain image
    seen.clear()
    target.forward = counting
    late = split_render(g, prompt, seg, seed=3, steps=4, split_steps=(0.5, 1))  # the last two steps split
    assert seen[2] == seen[3] == 3 * seen[0] == 3 * seen[1]
    late_0 = late.latents["image"][0]
    assert (late_0 - early_0).abs().max() > 1e-3 and (late_0 - split4).abs().max() > 1e-3
    for bad in (0, 1.5, (0.5, 0.5), (-0.1, 1), (0.2, 1.2)):
        with pytest.raises(ValueError, match="split_steps"):
            split_render(g, prompt, seg, split_steps=bad)
    for calls in (3, range(-1, 2), range(0, 4, 2)):
        with pytest.raises(ValueError, match="calls"), blended_rows(target, torch.ones(1, 2, 2), calls=calls):
            pass
    with pytest.raises(ValueError, match="whole"):
        split_render(g, prompt, seg, whole=1.5)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        split_render(g, prompt, seg[None])
    seg_only = random_graph({"factors": {"seg": {"steps": 2}}})
    with pytest.raises(ValueError, match="no image factor"):
        split_render(seg_only, prompt, seg)
    assert "forward" not in vars(g.base.unet) and "forward" not in vars(g.modules["image"])

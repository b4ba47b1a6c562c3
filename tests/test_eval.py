import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fgdm.cli import main
from fgdm.eval.features import clip_score, diversity, frechet_distance, next_prompt_texts, precision_recall
from fgdm.eval.metrics import (
    multigen_scores,
    object_recall,
    presence_by_position,
    present_categories,
    recall_summary,
    relation_holds,
    shuffled_recall,
    visor_scores,
)
from fgdm.eval.prompts import RECIPES, load_prompt_entries, to_multigen_json
from fgdm.eval.region import region_fidelity
from fgdm.world.categories import THINGS, category
from fgdm.world.dataset import make_sample
from fgdm.world.scene import WorldConfig

ROOT = Path(__file__).resolve().parents[1]
MULTIGEN = ROOT.parent / "shared" / "benchmarks" / "multigen_coco_5_1k.json"


@pytest.mark.parametrize(
    "recipe, n, name",
    [("multigen", 1000, "multigen_sceneworld_5_1k.json"), ("relations", 500, "relations_500.json"),
     ("dense", 200, "dense_6to8_200.json"), ("single", 400, "single_400.json"), ("pairs", 500, "pairs_500.json")],
)  # fmt: skip
def test_versioned_prompt_files_regenerate_exactly(recipe, n, name):
    assert json.loads((ROOT / "prompts" / name).read_text()) == to_multigen_json(RECIPES[recipe](n, 0))


def test_prompt_recipes():
    mg = RECIPES["multigen"](50, 1)
    assert all(len(set(e.objects)) == 5 and e.text.startswith("a photo of a ") for e in mg)
    assert all(6 <= len(e.objects) <= 8 for e in RECIPES["dense"](50, 1))
    rel = RECIPES["relations"](50, 1)
    assert {e.relation for e in rel} == {"left", "right", "above", "below"}
    assert RECIPES["multigen"](5, 2) != RECIPES["multigen"](5, 3)
    single = RECIPES["single"](160, 4)
    assert all(len(e.objects) == 1 for e in single) and {e.objects[0] for e in single[:80]} == {c.name for c in THINGS}
    assert "a photo of an apple" in {e.text for e in single}
    assert all(len(set(e.objects)) == 2 and " and " in e.text for e in RECIPES["pairs"](50, 1))
    caps = RECIPES["captions"](6, 3)
    for i, e in enumerate(caps):
        s = make_sample(i, seed=3, size=64)
        assert e.text == s.caption.text and set(e.objects) <= {o.category for o in s.render.scene.objects}
    assert any(e.objects for e in caps)


@pytest.mark.skipif(not MULTIGEN.exists(), reason="shared benchmarks not present")
def test_official_multigen_list_loads():
    entries = load_prompt_entries(MULTIGEN)
    assert len(entries) == 1000 and entries[0].objects == ("book", "cup", "kite", "mouse", "surfboard")
    assert all(len(e.objects) == 5 for e in entries)


def test_text_prompt_files_are_parsed(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("two puppies and a hot dog\na cat\n")
    assert [e.objects for e in load_prompt_entries(f)] == [("dog", "hot dog"), ("cat",)]


def test_recall_on_a_render_with_known_objects():
    s = make_sample(
        0, seed=3, size=128, config=WorldConfig(min_objects=3, max_objects=3, categories=("dog", "cat", "car"))
    )
    present = present_categories(s.render.seg)
    objs = {o.category for o in s.render.scene.objects}
    assert present == objs
    assert object_recall(sorted(objs), present) == 1.0
    assert object_recall([*sorted(objs), "giraffe"], present) == pytest.approx(len(objs) / (len(objs) + 1))
    assert object_recall(["giraffe"], present) == 0.0
    with pytest.raises(ValueError):
        object_recall([], present)
    assert recall_summary([1.0, 0.5, 1.0]) == {"mean_recall": 0.8333, "all_present_rate": 0.6667, "n": 3}


def test_shuffled_recall_is_the_chance_level_of_recall():
    objects = [["dog"], ["cat"], ["dog", "cat"], ["bus"]]
    present = [["dog", "bus"], ["dog"], [], ["cat"]]
    # dog found in 1 of the 2 images not asking for it, cat in 1 of 2, bus in 1 of 3
    assert shuffled_recall(objects, present) == pytest.approx(round((0.5 + 0.5 + 0.5 + 1 / 3) / 4, 4))
    assert shuffled_recall(objects, [["dog", "cat", "bus"]] * 4) == 1.0  # a judge that sees everything
    assert shuffled_recall(objects, [[]] * 4) == 0.0
    assert shuffled_recall([["dog"], ["dog", "cat"]], [["dog"], ["cat"]]) is None  # every prompt names dog
    with pytest.raises(ValueError, match="equally long"):
        shuffled_recall(objects, present[:3])


def test_presence_by_position_counts_each_named_slot_over_the_prompts_that_have_it():
    objects = [["dog", "cat"], ["bus", "dog"], ["cat", "bus", "cake"], ["car"]]
    present = [["dog"], ["bus", "dog"], ["cake", "cat"], []]
    # 1st named: dog yes, bus yes, cat yes, car no -> 3/4; 2nd: cat no, dog yes, bus no -> 1/3; 3rd: cake yes -> 1/1
    assert presence_by_position(objects, present) == [75.0, 33.33, 100.0]
    assert presence_by_position([["dog", "cat"]] * 2, [["cat"], ["cat", "dog"]]) == [50.0, 100.0]  # order, not names
    with pytest.raises(ValueError, match="equally long"):
        presence_by_position(objects, present[:2])
    with pytest.raises(ValueError, match="no prompt objects"):
        presence_by_position([[]], [["dog"]])


def test_presence_threshold():
    seg = np.full((100, 100), category("grass").id, np.uint8)
    seg[:2, :10] = category("dog").id  # 0.2% < 0.3%
    seg[50:60, 50:60] = category("cat").id  # 1%
    assert present_categories(seg) == {"cat"}  # stuff never counts, specks do not either


def test_multigen_scores():
    counts = np.array([[5, 4, 3, 2], [5, 5, 1, 0]])  # 2 rounds x 4 prompts
    s = multigen_scores(counts)
    assert s["MG2"] == {"mean": 75.0, "std": 25.0}  # rounds: 4/4 and 2/4 images with >= 2
    assert s["MG5"] == {"mean": 37.5, "std": 12.5}
    with pytest.raises(ValueError):
        multigen_scores(np.array([1, 2]))


def test_relations_and_visor():
    seg = np.zeros((64, 64), np.uint8)
    seg[20:30, 5:15] = category("dog").id
    seg[40:50, 40:50] = category("cat").id
    assert relation_holds(seg, "dog", "cat", "left") and relation_holds(seg, "dog", "cat", "above")
    assert not relation_holds(seg, "dog", "cat", "right")
    assert relation_holds(seg, "dog", "bus", "left") is None
    with pytest.raises(ValueError, match="sideways"):
        relation_holds(seg, "dog", "cat", "sideways")
    v = visor_scores([(True, True), (True, False), (False, None), (True, True)])
    assert v == {"object_accuracy": 75.0, "relation_accuracy_given_objects": 66.67, "n": 4}


def test_frechet_distance_identical_is_zero_and_shift_is_positive():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(64, 3, 8, 8, generator=g)

    def feat(x):
        return x.mean(dim=(2, 3))  # 3-d features

    assert frechet_distance(imgs, imgs, feat) == pytest.approx(0.0, abs=1e-6)
    shifted = (imgs * 0.5 + 0.5).clamp(0, 1)
    assert frechet_distance(imgs, shifted, feat) > 0.01


def test_shuffled_clip_score_pairs_each_image_with_the_next_prompt():
    text = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0], [0, 1.0], [5.0, 5.0]])  # prompts of 2, 3, 1 images
    assert next_prompt_texts(text, [2, 3, 1]).tolist() == [[0, 1], [0, 1], [5, 5], [5, 5], [5, 5], [1, 0]]
    img = text.clone()
    assert clip_score(img, text) == pytest.approx(100)
    assert clip_score(img, next_prompt_texts(text, [2, 3, 1])) == pytest.approx(100 * (0 + 0 + 3 * 2**-0.5 + 2**-0.5) / 6)


def test_precision_recall_diversity_clip_score():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=g)
    same = precision_recall(a, a.clone())
    assert same == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(a, a + 100)
    assert far == {"precision": 0.0, "recall": 0.0}
    collapsed = precision_recall(a, a[:1].repeat(10, 1) + 0.01 * torch.randn(10, 8, generator=g))
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2  # mode collapse: precise, no coverage
    assert diversity(a[:1].repeat(5, 1)) == pytest.approx(0.0, abs=1e-9)
    assert diversity(a[:20]) > 0.5
    text = torch.randn(50, 16, generator=g)
    img = text + 0.3 * torch.randn(50, 16, generator=g)
    assert clip_score(img, text) > clip_score(img[torch.randperm(50, generator=g)], text) + 20  # shuffled is worse


def test_region_fidelity():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 64, 64, generator=g)
    cond = img[:, 10:30, 20:40].clone()
    same = region_fidelity(img, cond, (20, 10, 40, 30), feature_fn=lambda x: x.flatten(1),
                           segment=lambda crop: {"dog"}, category="dog")  # fmt: skip
    assert same["psnr"] > 60 and same["ssim"] > 0.99 and same["feature_distance"] < 1e-6 and same["category_kept"]
    other = region_fidelity(img, torch.rand(3, 20, 20, generator=g), (20, 10, 40, 30))
    assert other["psnr"] < 15 and other["ssim"] < 0.5
    with pytest.raises(ValueError, match="box"):
        region_fidelity(img, cond, (50, 50, 70, 70))


def test_make_prompts_cli(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["eval", "make-prompts", "--recipe", "dense", "--n", "3", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())) == 3
    assert main(["eval", "make-prompts", "--recipe", "dense", "--n", "3", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_quality_runner(tiny_sd_dir, tiny_clip_dir, tmp_path, capsys):
    """`eval quality` writes a run folder, resumes without drawing finished images again, and
    batches across prompts without changing what it measures."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog\na cat and a bus\n")
    out = tmp_path / "q"
    argv = ["eval", "quality", "--prompts", str(prompts), "--clip", str(tiny_clip_dir), "--model", str(tiny_sd_dir),
            "--images-per-prompt", "3", "--steps", "2", "--n-real", "8", "--json", "--quiet"]  # fmt: skip
    assert main([*argv, "--out", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_generated"] == 6 and r["n_real"] == 8 and r["reference"] == "prompts"
    assert r["frechet_distance"] >= 0 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert r["diversity"] is not None and 0 <= r["clip_score"] <= 100 and 0 <= r["clip_score_shuffled"] <= 100
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "done" and rec["result"] == r and rec["settings"]["n_real"] == 8
    assert sorted(f.name for f in (out / "images").iterdir()) == [f"p0000{p}-0{k}.png" for p in (0, 1) for k in (0, 1, 2)]
    assert main([*argv, "--out", str(out)]) == 2 and "--resume" in capsys.readouterr().err
    (out / "results" / "p00001-02.json").unlink()  # as an interrupted run leaves it
    stamp = (out / "images" / "p00000-00.png").stat().st_mtime_ns
    assert main([*argv, "--out", str(out), "--resume", "--batch-size", "4"]) == 0
    again = json.loads(capsys.readouterr().out)  # the one image drawn again, alone: the same up to rounding
    nums = [k for k in r if k != "reference"]
    assert again.keys() == r.keys() and all(again[k] == pytest.approx(r[k], rel=1e-3, abs=1e-3) for k in nums)
    assert (out / "images" / "p00000-00.png").stat().st_mtime_ns == stamp  # not drawn again
    assert main([*argv, "--out", str(out), "--resume", "--n-real", "4"]) == 2
    assert "other settings (n_real: " in capsys.readouterr().err  # names what differs, then and now
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text("[1, 2")  # cut off mid-write
    assert main([*argv, "--out", str(tmp_path / "bad"), "--resume"]) == 2
    assert "unreadable record.json" in capsys.readouterr().err
    # batches across prompts (4 = a prompt and a part of the next) measure the same images
    assert main([*argv, "--out", str(tmp_path / "q4"), "--batch-size", "4"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert b.keys() == r.keys() and all(b[k] == pytest.approx(r[k], rel=1e-2, abs=1e-3) for k in nums)
    assert main(["eval", "quality", "--prompts", str(prompts), "--clip", str(tmp_path), "--model", str(tiny_sd_dir),
                 "--out", str(tmp_path / "q5")]) == 2  # fmt: skip
    capsys.readouterr()
    # the reference: renders of the same prompts (default) or of the world at large, other images, same images drawn
    assert main([*argv, "--out", str(tmp_path / "qw"), "--reference", "world"]) == 0
    w = json.loads(capsys.readouterr().out)
    assert w["reference"] == "world" and w["clip_score"] == pytest.approx(r["clip_score"], abs=1e-3)
    assert w["frechet_distance"] != pytest.approx(r["frechet_distance"], abs=1e-3)
    prompts.write_text("a dog\na snowy landscape\n")
    assert main([*argv, "--out", str(tmp_path / "q6")]) == 2
    assert "name none, e.g. 'a snowy landscape' (use reference 'world')" in capsys.readouterr().err


def test_quality_of_real_renders(tiny_clip_dir, tmp_path, capsys):
    """`eval quality --real` measures world renders of each prompt (the ceiling) the same way; the
    images are those `eval recall --real` draws for the same prompts and seeds."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog\na cat and a bus\n")
    argv = ["eval", "quality", "--prompts", str(prompts), "--clip", str(tiny_clip_dir), "--real", "--size", "64",
            "--images-per-prompt", "2", "--n-real", "8", "--json", "--quiet", "--out", str(tmp_path / "q")]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_generated"] == 4 and r["frechet_distance"] >= 0 and 0 <= r["clip_score"] <= 100
    settings = json.loads((tmp_path / "q" / "record.json").read_text())["settings"]
    assert settings["model"] == "sceneworld renders" and settings["steps"] is None
    rows = [json.loads(f.read_text()) for f in sorted((tmp_path / "q" / "results").glob("*.json"))]
    assert all(r_["fits"] for r_ in rows) and [r_["seed"] for r_ in rows] == [0, 1, 1000, 1001]
    prompts.write_text("a dog\na photo of nothing much\n")
    assert main([*argv[:-1], str(tmp_path / "q2")]) == 2
    assert "name none, e.g. 'a photo of nothing much'" in capsys.readouterr().err


def test_text_encoder_order_script(tiny_sd_dir, tiny_judge_dir, tmp_path, capsys, monkeypatch):
    """scripts/text_encoder_order.py (a figure in results.md): causal-prefix states, verdict split, intervention."""
    import runpy

    def run(args):
        monkeypatch.setattr("sys.argv", args)
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 0
        return json.loads(capsys.readouterr().out)

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "text_encoder_order.py")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of a dog and a cat\na photo of a teddy bear and a bus\na photo of an apple and a cup\n")
    results = tmp_path / "base" / "results"
    results.mkdir(parents=True)
    present = [["dog"], ["bus", "teddy bear"], ["cup"]]
    for p, found in enumerate(present):
        (results / f"p{p:05d}-00.json").write_text(json.dumps({"prompt_index": p, "k": 0, "present": found}))
    argv = ["x", "--model", str(tiny_sd_dir), "--prompts", str(prompts), "--results", str(tmp_path / "base")]
    r = run(argv)
    s = r["summary"]
    assert s["prompts"] == 3 and [p["b"] for p in r["per_prompt"]] == ["cat", "bus", "cup"]
    assert s["mean_a_vs_solo_a"] == pytest.approx(1.0, abs=1e-4)  # a causal encoder: A's prefix is A alone
    assert all(p["b_vs_solo_b"] < 0.9999 for p in r["per_prompt"])  # B has read A
    assert {k: v["images"] for k, v in s["by_verdict"].items()} == {"A-": 1, "AB": 1, "-B": 1}
    assert 0 <= s["b_found_auc_of_margin"] <= 1 and 0 < s["b_found_auc_p_within_category"] <= 1
    iv = run([*argv, "--intervene", str(tmp_path / "iv"), "--limit", "2", "--judge", str(tiny_judge_dir)])
    iv = iv["summary"]["intervention"]
    assert iv["images"] == 2 and iv["both_present"][0] == 0.5  # the old verdicts of prompts 0 and 1
    assert sorted(f.name for f in (tmp_path / "iv" / "images").iterdir()) == ["p00000-00.png", "p00001-00.png"]
    from PIL import Image

    from fgdm.pipelines.text2image import Text2ImagePipeline

    plain = Text2ImagePipeline.from_pretrained(tiny_sd_dir)("a photo of a dog and a cat", seed=0).images[0]
    changed = np.asarray(Image.open(tmp_path / "iv" / "images" / "p00000-00.png"), dtype=int)
    assert np.abs(changed - np.asarray(plain, dtype=int)).max() > 0  # B's states were replaced
    run([*argv, "--intervene", str(tmp_path / "iv3"), "--limit", "1", "--judge", str(tiny_judge_dir),
         "--intervene-mode", "b+tail"])  # fmt: skip
    tail = np.asarray(Image.open(tmp_path / "iv3" / "images" / "p00000-00.png"), dtype=int)
    assert np.abs(tail - changed).max() > 0  # the end-of-text and padding states were replaced as well
    prompts.write_text("a dog to the left of a cat\n")  # another two-object template: states compared, no prefix identity
    r = run(argv[:5])
    assert [(p["a"], p["b"]) for p in r["per_prompt"]] == [("dog", "cat")] and r["summary"]["mean_a_vs_solo_a"] < 0.9999
    def fails(args, message):  # a one-line error naming the problem, exit 2 (no traceback)
        monkeypatch.setattr("sys.argv", args)
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 2 and message in capsys.readouterr().err

    fails([*argv, "--intervene", str(tmp_path / "iv2")], "expects prompts 'a photo of a A and a B'")
    fails([*argv[:5], "--intervene", str(tmp_path / "iv2")], "--intervene needs --results")
    fails([*argv[:5], "--results", str(tmp_path / "nothing")], "no results/*.json")
    fails(["x", "--model", str(tmp_path / "nope"), "--prompts", str(prompts)], "is not a diffusers SD folder")
    prompts.write_text("a photo of a dog\n")
    fails(argv, "names 1 objects; two-object prompts only")


def test_text_encoder_order_auc():
    import importlib.util

    spec = importlib.util.spec_from_file_location("teo", Path(__file__).resolve().parents[1] / "scripts" / "text_encoder_order.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    assert m._auc([("x", 1.0, True), ("x", 0.0, False)]) == 1.0
    assert m._auc([("x", 0.0, True), ("x", 1.0, False)]) == 0.0
    assert m._auc([("x", 0.5, True), ("x", 0.5, False)]) == 0.5
    # one category whose verdicts follow the margin perfectly: shuffling within it rarely does as well
    images = [("x", i / 20, i >= 10) for i in range(20)]
    assert m._permutation_p(images, rounds=200) < 0.05
    # verdicts that are constant within each category: every shuffle is the same, p = 1
    flat = [("a", 0.1, True), ("a", 0.9, True), ("b", 0.2, False), ("b", 0.8, False)]
    assert m._permutation_p(flat, rounds=50) == 1.0


def test_count_flops_counts_products_and_attention_from_shapes():
    """Known answers: a (4, 8) x (8, 16) product is 2*4*8*16 operations; attention over 16 queries
    and keys of width 8 in 2 heads is 2 products of 2*2*16*16*8, on the CPU kernel too."""
    import torch.nn.functional as F

    from fgdm.eval.timing import count_flops

    a, b = torch.randn(4, 8), torch.randn(8, 16)
    assert count_flops(lambda: a @ b) == 2 * 4 * 8 * 16
    q = k = v = torch.randn(1, 2, 16, 8)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * (2 * 2 * 16 * 16 * 8)
    assert count_flops(lambda: a + 1) == 0  # elementwise work is not counted


def test_category_presence_script(tmp_path, capsys, monkeypatch):
    """scripts/category_presence.py (a figure in results.md): per-category presence of a run beside
    how often the training world draws and names each category."""
    import runpy

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "category_presence.py")
    (tmp_path / "run" / "results").mkdir(parents=True)
    for k, (obj, present) in enumerate([("dog", ["dog"]), ("dog", []), ("vase", []), ("cat", ["cat", "dog"])]):
        (tmp_path / "run" / "results" / f"p{k:05d}-00.json").write_text(
            json.dumps({"objects": [obj], "present": present}))
    monkeypatch.setattr("sys.argv", ["x", str(tmp_path / "run"), "--scenes", "40", "--size", "64"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 0
    out = json.loads(capsys.readouterr().out)
    by = {r["category"]: r for r in out["all"]}
    assert by["dog"]["presence"] == 0.5 and by["dog"]["images"] == 2 and by["cat"]["presence"] == 1.0
    assert [r["category"] for r in out["worst"]][:2] == ["vase", "dog"]
    for r in out["all"]:
        assert 0 <= r["training_caption_fraction"] <= r["training_scene_fraction"] <= 1
    assert -1 <= out["spearman_presence_vs_size"] <= 1
    spearman = runpy.run_path(script)["spearman"]
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1) and spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert spearman([1, 1, 2], [5, 6, 7]) == pytest.approx(0.866, abs=1e-3)  # tied ranks share their mean


def test_clip_vs_recall_script(tiny_sd_dir, tiny_judge_dir, tiny_clip_dir, tmp_path, capsys):
    """scripts/clip_vs_recall.py (a figure in results.md): within-prompt concordance on known
    numbers, and the script end to end on a finished recall run."""
    import importlib.util
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "clip_vs_recall.py"
    spec = importlib.util.spec_from_file_location("cvr", script)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    # prompt 0: recall order 1 > 0.5 > 0 with scores 3 > 1 > 2 -> pairs (1, .5) win, (1, 0) win, (.5, 0) lose
    assert m.pair_concordance([3, 1, 2, 5, 5], [1, 0.5, 0, 1, 0], [0, 0, 0, 1, 1]) == ((1 + 1 + 0 + 0.5) / 4, 4)
    assert m.pair_concordance([1, 2], [1, 1], [0, 0]) == (None, 0)  # equal recalls: no pair to compare
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat\na photo of a bus\n")
    run = tmp_path / "run"
    assert main(["eval", "recall", "--prompts", str(prompts), "--model", str(tiny_sd_dir), "--judge", str(tiny_judge_dir),
                 "--images-per-prompt", "2", "--steps", "2", "--out", str(run), "--json", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    done = subprocess.run([sys.executable, str(script), str(run), "--clip", str(tiny_clip_dir)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["images"] == 4 and 0 <= out["clip_score"] <= 100 and 0 <= out["mean_recall"] <= 1
    bad = subprocess.run([sys.executable, str(script), str(tmp_path), "--clip", str(tiny_clip_dir)],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "not a finished eval recall run" in bad.stderr


def test_map_agreement_on_known_maps():
    """Error and correlation of one-channel maps (depth, sketch) with known answers; flat maps have no correlation."""
    from fgdm.eval.metrics import map_agreement

    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (8, 1))
    assert map_agreement([ramp], [ramp]) == {"mae": 0.0, "corr": 1.0}
    assert map_agreement([1 - ramp], [ramp]) == {"mae": round(float(np.abs(1 - 2 * ramp).mean()), 4), "corr": -1.0}
    flat = np.full((8, 8), 0.25, np.float32)
    assert map_agreement([flat], [ramp]) == {"mae": round(float(np.abs(ramp - 0.25).mean()), 4), "corr": None}
    both = map_agreement([flat, ramp], [ramp, ramp])  # the flat map counts in the error only
    assert both["corr"] == 1.0 and both["mae"] == round(float(np.abs(ramp - 0.25).mean()) / 2, 4)
    with pytest.raises(ValueError, match="as many maps as references"):
        map_agreement([ramp], [])
    with pytest.raises(ValueError, match=r"map 0 is \(4, 4\), its reference \(8, 8\)"):
        map_agreement([ramp[:4, :4]], [ramp])


def test_normal_agreement_on_known_maps():
    """Angles between normal maps with known answers: equal maps 0 degrees, a 45-degree tilt 45, opposite 180."""
    from fgdm.eval.metrics import normal_agreement

    up = np.zeros((4, 4, 3), np.float32)
    up[..., 2] = 1
    tilt = up.copy()
    tilt[..., 0] = tilt[..., 2] = np.sqrt(0.5)
    assert normal_agreement([up], [up]) == {"deg": 0.0, "within_11": 1.0}
    assert normal_agreement([tilt], [up]) == {"deg": 45.0, "within_11": 0.0}
    half = up.copy()
    half[:2] = tilt[:2]  # half the pixels tilted: 22.5 degrees on average, half within 11.25
    assert normal_agreement([half, -up], [up, up]) == {"deg": round((22.5 + 180) / 2, 3), "within_11": 0.25}
    with pytest.raises(ValueError, match="normal_agreement: give as many maps"):
        normal_agreement([], [])
    with pytest.raises(ValueError, match=r"map 0 is \(2, 4, 3\), its reference \(4, 4, 3\)"):
        normal_agreement([up[:2]], [up])

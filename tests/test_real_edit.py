"""Real-image editing through FG-DM on tiny models: prompt edits, extraction, inversion, metrics, the CLI."""

import json

import numpy as np
import pytest
from PIL import Image

from fgdm.cli import main
from fgdm.editing.real import dilate, edit_metrics, edit_prompt, edit_real_image, map_edit_prompt, psnr, render_edit
from fgdm.world.dataset import make_sample


@pytest.mark.parametrize(
    ("prompt", "replace", "remove", "want"),
    [
        ("a dog and a cat on the grass", {"dog": "horse"}, None, "a horse and a cat on the grass"),
        ("a dog and a cat on the grass", None, ["dog"], "a cat on the grass"),
        ("a dog and a cat on the grass", None, ["cat"], "a dog on the grass"),
        ("a bus, a car and a person", {"person": "dog"}, ["car"], "a bus, and a dog"),
        ("a photo of a lake with an orange and a dog.", None, ["orange"], "a photo of a lake and a dog."),
        ("a photo of a dog, a cat, and a bus.", None, ["dog"], "a photo of a cat, and a bus."),
        ("a dog with a cat on the grass", None, ["dog"], "a cat on the grass"),
        ("a cat next to a dog.", None, ["dog"], "a cat."),
    ],
)
def test_edit_prompt(prompt, replace, remove, want):
    got = edit_prompt(prompt, replace, remove)
    assert got.replace(", and", " and") == want.replace(", and", " and")


def test_edit_prompt_errors():
    with pytest.raises(ValueError, match="does not mention 'cat'"):
        edit_prompt("a dog on the grass", {"cat": "dog"})
    with pytest.raises(ValueError, match="unknown category 'dragon'"):
        edit_prompt("a dog", {"dog": "dragon"})
    with pytest.raises(ValueError, match="leaves no object"):
        edit_prompt("a dog", remove=["dog"])


def test_map_edit_prompt_follows_the_classes_the_map_lost_and_gained():
    src = np.full((8, 8), 83, np.uint8)  # grass
    src[1:3, 1:3], src[5:7, 5:7] = 16, 15  # a dog, a cat
    to_horse = src.copy()
    to_horse[src == 16] = 17
    assert map_edit_prompt("a dog and a cat on the grass", src, to_horse) == "a horse and a cat on the grass"
    gone = src.copy()
    gone[src == 16] = 83
    assert map_edit_prompt("a dog and a cat on the grass", src, gone) == "a cat on the grass"
    both = gone.copy()
    both[0:2, 5:8], both[7, 0] = 17, 18  # a horse (larger) and a sheep
    assert map_edit_prompt("a dog and a cat", src, both) == "a horse and a cat and a sheep"
    moved = np.roll(src, 1, axis=1)
    assert map_edit_prompt("a dog and a cat", src, moved) == "a dog and a cat"  # same classes: same prompt
    void = to_horse.copy()
    void[0, 0] = 255  # a pixel a sampled map left undecoded is no class
    assert map_edit_prompt("a dog and a cat on the grass", src, void) == "a horse and a cat on the grass"


def test_changed_region_unites_every_map():
    from fgdm.editing.real import changed_region

    seg = np.zeros((4, 4), np.uint8)
    depth = np.zeros((4, 4), np.float32)
    normal = np.zeros((4, 4, 3), np.uint8)
    seg2, depth2, normal2 = seg.copy(), depth.copy(), normal.copy()
    seg2[0, 0], depth2[1, 1], normal2[2, 2, 1] = 5, 0.5, 9
    got = changed_region({"seg": seg, "depth": depth, "normal": normal}, {"seg": seg2, "depth": depth2, "normal": normal2})
    assert got.sum() == 3 and got[0, 0] and got[1, 1] and got[2, 2]
    with pytest.raises(ValueError, match="before has maps"):
        changed_region({"seg": seg}, {"depth": depth})
    with pytest.raises(ValueError, match="is \\(4, 4\\) before and \\(2, 2\\) after"):
        changed_region({"seg": seg}, {"seg": seg[:2, :2]})


def test_dilate():
    m = np.zeros((7, 7), bool)
    m[3, 3] = True
    assert dilate(m, 0).sum() == 1 and dilate(m, 1).sum() == 9 and dilate(m, 2)[1:6, 1:6].all()


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    b = a.copy()
    b[0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * np.log10(16), abs=1e-6)  # 3 of 48 values off by 255
    assert np.isnan(psnr(a, b, np.zeros((4, 4, 3), bool)))  # an empty region has no PSNR


@pytest.fixture()
def setup(random_graph, tiny_judge_dir, tmp_path):
    pipe = random_graph({"factors": {"seg": {"steps": 4}, "image": {"kind": "controlnet", "parents": ["seg"], "steps": 4}}})
    graph = pipe.save_pretrained(tmp_path / "graph")
    img = tmp_path / "real.png"
    Image.fromarray(make_sample(0, seed=7, size=64).render.image).save(img)
    return pipe, graph, tiny_judge_dir, img


def _known_map(monkeypatch):
    """The judge's extraction replaced by a known map: grass with a dog in its top-left corner."""
    seg = np.full((32, 32), 83, np.uint8)
    seg[2:10, 2:10] = 16
    monkeypatch.setattr("fgdm.editing.real.extract_map", lambda judge, image, size: seg.copy())
    return seg


def test_edit_real_image_end_to_end(setup, monkeypatch):
    from fgdm.models.judge import load_judge

    pipe, _, judge_dir, img = setup
    judge = load_judge(judge_dir)
    image = Image.open(img)
    seg = _known_map(monkeypatch)
    res = edit_real_image(pipe, judge, image, "a dog on the grass", replace={"dog": "cat"}, steps=4)
    assert res.edited_prompt == "a cat on the grass" and res.source_map.shape == (32, 32)
    assert res.image.size == (32, 32) and set(res.timings) >= {"extract_s", "render_s"}
    region = dilate(seg == 16, 1)  # the masked text edit touches the dog's region only
    assert np.array_equal(res.edited_map[~region], seg[~region])
    whole = edit_real_image(pipe, judge, image, "a dog on the grass", replace={"dog": "cat"}, steps=4, masked=False)
    assert not np.array_equal(whole.edited_map[~region], seg[~region])  # unmasked, the random factor redraws it all
    with pytest.raises(ValueError, match=r"the judge finds no \['cat'\] in the image \(it sees \['dog', 'grass'\]\)"):
        edit_real_image(pipe, judge, image, "a dog and a cat", remove=["cat"], steps=4)
    same = edit_real_image(pipe, judge, image, "a dog on the grass", steps=4, map_edits=lambda s: s)
    assert np.array_equal(same.edited_map, same.source_map) and same.edited_prompt == "a dog on the grass"
    res.edited_map[0, :4] = 255  # undecoded pixels of a sampled map are measured as no class
    m = edit_metrics(pipe, judge, image, "a dog on the grass", res, steps=4)
    assert set(m) == {"reconstruction_psnr", "unchanged_psnr", "edited_fraction", "edited_region_recall"}
    assert m["reconstruction_psnr"] > 0 and 0 <= m["edited_fraction"] <= 1
    with pytest.raises(ValueError, match="nothing to edit"):
        edit_real_image(pipe, judge, image, "a dog")


def test_masked_render_keeps_the_image_where_the_map_did_not_change(setup):
    from fgdm.pipelines.text2image import latents_to_images

    pipe, _, _, img = setup
    image = Image.open(img)
    seg = np.full((32, 32), 80, np.uint8)
    seg[2:10, 2:10] = 16
    kept = render_edit(pipe, image, seg, seg, "a dog", steps=3)  # nothing changed: the image's own latent, decoded
    want = latents_to_images(pipe.base.vae, pipe.encode_value("image", image, 32))[0]
    assert np.array_equal(np.asarray(kept), np.asarray(want))
    moved = np.roll(seg, 12, axis=1)
    a = render_edit(pipe, image, seg, moved, "a dog", steps=3)
    b = render_edit(pipe, image, seg, moved, "a dog", steps=3, masked=False)
    assert not np.array_equal(np.asarray(a), np.asarray(kept)) and not np.array_equal(np.asarray(a), np.asarray(b))


def test_edit_real_cli(setup, tmp_path, capsys, monkeypatch):
    _, graph, judge_dir, img = setup
    seg = _known_map(monkeypatch)
    seg[20:28, 20:28] = 15  # and a cat
    out = tmp_path / "out"
    assert main(["edit-real", str(img), "--prompt", "a dog and a cat on the grass", "--replace", "dog:horse",
                 "--remove", "cat", "--graph", str(graph), "--judge", str(judge_dir), "--steps", "3", "--measure",
                 "-o", str(out)]) == 0  # fmt: skip
    rec = json.loads((out / "record.json").read_text())
    assert rec["edited_prompt"] == "a horse on the grass" and rec["metrics"]["reconstruction_psnr"] > 0
    assert rec["masked"] is True and rec["guidance"] is None
    assert all((out / f).exists() for f in rec["files"])
    whole = tmp_path / "whole"
    assert main(["edit-real", str(img), "--prompt", "a dog on the grass", "--replace", "dog:horse", "--no-mask",
                 "--guidance", "2", "--graph", str(graph), "--judge", str(judge_dir), "--steps", "3", "-o", str(whole)]) == 0  # fmt: skip
    rec = json.loads((whole / "record.json").read_text())
    assert rec["masked"] is False and rec["guidance"] == 2.0
    assert (whole / "image-000.png").read_bytes() != (out / "image-000.png").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["edit-real", str(img), "--prompt", "a dog", "--remove", "dog", "--guidance", "0"])
    assert "--guidance: must be > 0" in capsys.readouterr().err
    assert main(["edit-real", str(img), "--prompt", "a dog", "--replace", "cat:dog", "--graph", str(graph), "--judge",
                 str(judge_dir), "-o", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "does not mention 'cat'" in capsys.readouterr().err
    assert main(["edit-real", str(tmp_path / "none.png"), "--prompt", "a dog", "--remove", "dog"]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_plan_edit_picks_the_largest_visible_object_and_a_new_class():
    from fgdm.eval.real_edit_bench import plan_edit
    from fgdm.world.vocab import parse_prompt

    planned = 0
    for i in range(6):
        plan = plan_edit(i, seed=50_000, size=64)
        if plan is None:
            continue
        planned += 1
        r = make_sample(i, seed=50_000, size=64).render
        present = {o.category for o in r.scene.objects}
        assert plan["old"] in present and plan["new"] not in present
        assert plan["old"] in parse_prompt(plan["prompt"]).things
        assert plan == plan_edit(i, seed=50_000, size=64) | {"image": plan["image"]}  # deterministic
    assert planned >= 4  # most renders have a visible object: the checks above did run


@pytest.mark.parametrize("edit", ["text", "map"])
def test_eval_real_edit_cli_resumes(setup, tmp_path, capsys, monkeypatch, edit):
    from fgdm.world.categories import THINGS

    _, graph, judge_dir, _ = setup
    ids = np.array([c.id for c in THINGS], np.uint8)  # a (random) judge that sees every thing class somewhere
    monkeypatch.setattr("fgdm.editing.real.extract_map", lambda judge, image, size: ids[np.arange(size * size) % len(ids)].reshape(size, size))
    out = tmp_path / f"run-{edit}"
    argv = ["eval", "real-edit", "--n", "3", "--edit", edit, "--steps", "2", "--graph", str(graph), "--judge",
            str(judge_dir), "--out", str(out), "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3 and summary["edited"] + summary["skipped"] == 3
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "done" and len(rec["rows"]) == 3
    for r in rec["rows"]:
        if "skipped" in r:
            continue
        assert r["reconstruction_psnr"] > 0 and 0 <= r["new_class_recall"] <= 1 and r["seconds"] > 0
        assert r["edited_prompt"] == r["prompt"].replace(r["old"], r["new"]) or edit == "map"
    if edit == "text":
        assert summary["edited"] == 3 and (out / "examples.png").exists()
    stamp = {f.name: f.stat().st_mtime_ns for f in (out / "results").iterdir()}
    assert main([*argv, "--resume"]) == 0
    assert {f.name: f.stat().st_mtime_ns for f in (out / "results").iterdir()} == stamp
    assert json.loads(capsys.readouterr().out) == summary

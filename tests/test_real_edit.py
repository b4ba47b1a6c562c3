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
    assert set(m) == {"reconstruction_psnr", "unchanged_psnr", "edited_fraction", "edited_region_recall",
                      "edited_region_removal", "edited_region_background"}  # fmt: skip
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
    assert main(["edit-real", str(img), "--prompt", "a dog", "--replace", "dog:cat", "--depth", "--graph", str(graph),
                 "--judge", str(judge_dir), "-o", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "depth: the graph's image factor does not read depth" in capsys.readouterr().err
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


@pytest.mark.parametrize("edit", ["text", "map", "remove", "delete"])
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
        assert r["reconstruction_psnr"] > 0 and r["seconds"] > 0 and 0 <= r["background_rate"] <= r["removal_rate"] <= 1
        if edit in ("text", "map"):
            assert 0 <= r["new_class_recall"] <= 1
        else:
            assert r["new"] is None and r["new_class_recall"] is None
        assert edit != "text" or r["edited_prompt"] == r["prompt"].replace(r["old"], r["new"])
        assert edit != "remove" or r["old"] not in r["edited_prompt"]
    assert summary["removal_rate"] is not None
    if edit in ("text", "remove"):
        assert summary["edited"] == 3 and (out / "examples.png").exists()
    stamp = {f.name: f.stat().st_mtime_ns for f in (out / "results").iterdir()}
    assert main([*argv, "--resume"]) == 0
    assert {f.name: f.stat().st_mtime_ns for f in (out / "results").iterdir()} == stamp
    assert json.loads(capsys.readouterr().out) == summary


def test_text_edit_depth_fills_where_a_pixel_became_background():
    from fgdm.editing.real import text_edit_depth

    src = np.full((16, 16), 83, np.uint8)  # grass, whose disparity falls with the row
    src[4:10, 4:10] = 16  # a dog, nearer than the grass around it
    depth = np.repeat(np.linspace(0.2, 0.6, 16, dtype=np.float32)[:, None], 16, axis=1)
    depth[4:10, 4:10] = 0.95
    edited = src.copy()
    edited[4:10, 4:7] = 17  # half of the dog becomes a horse, keeping its shape and depth
    edited[4:10, 7:10] = 83  # the other half becomes grass: its disparity is the row's again
    got = text_edit_depth(src, edited, depth)
    assert np.array_equal(got[:, :7], depth[:, :7]) and np.array_equal(got[:, 10:], depth[:, 10:])
    assert np.allclose(got[4:10, 7:10], depth[4:10, 0:1], atol=1e-6)  # exact for a row-constant background
    edited[0, 0] = 255  # undecoded (void) pixels are not background: kept
    assert got[0, 0] == text_edit_depth(src, edited, depth)[0, 0] == depth[0, 0]
    assert np.array_equal(text_edit_depth(src, src, depth), depth)


def test_judge_depth_images(tiny_judge_dir):
    import torch

    from fgdm.models.judge import load_judge

    judge = load_judge(tiny_judge_dir)
    img = make_sample(0, seed=7, size=64).render.image
    (d,) = judge.depth_images([img], 32)
    assert d.shape == (32, 32) and d.dtype == np.float32 and 0 <= d.min() <= d.max() <= 1
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert np.allclose(judge.depth_images([img])[0], judge.predict(x)[1][0, 0].numpy())  # the predict() depth


def test_edit_real_image_with_depth(random_graph, tiny_judge_dir, tmp_path, monkeypatch):
    """With a depth-reading image factor, the judge's depth is extracted, edited with the seg map and
    given to the re-render; without one, asking for depth is an error."""
    from fgdm.editing import delete
    from fgdm.editing.real import use_depth
    from fgdm.models.judge import load_judge

    pipe = random_graph({"factors": {"seg": {"steps": 3}, "depth": {"parents": ["seg"], "steps": 3},
                                     "image": {"kind": "controlnet", "parents": ["seg", "depth"], "steps": 3}}})  # fmt: skip
    judge = load_judge(tiny_judge_dir)
    image = Image.fromarray(make_sample(0, seed=7, size=64).render.image)
    seg = _known_map(monkeypatch)
    depth = np.repeat(np.linspace(0.1, 0.5, 32, dtype=np.float32)[:, None], 32, axis=1)
    depth[2:10, 2:10] = 0.9
    monkeypatch.setattr("fgdm.editing.real.extract_depth", lambda judge, image, size: depth.copy())
    seen = []
    call = type(pipe).__call__
    monkeypatch.setattr(type(pipe), "__call__", lambda self, *a, **k: seen.append(k.get("given")) or call(self, *a, **k))
    res = edit_real_image(pipe, judge, image, "a dog on the grass", steps=3, depth=True,
                          map_edits=lambda s: delete(s, "dog"))  # fmt: skip
    assert np.array_equal(res.source_depth, depth) and res.edited_prompt == "the grass"
    assert (res.edited_map[2:10, 2:10] == 83).all()  # the dog is gone from the seg map ...
    assert res.edited_depth[2:10, 2:10].max() < 0.6  # ... and from the depth map, filled from the grass around it
    assert np.array_equal(res.edited_depth[12:], depth[12:])
    assert set(seen[-1]) == {"seg", "depth"} and np.array_equal(seen[-1]["depth"], res.edited_depth)
    m = edit_metrics(pipe, judge, image, "a dog on the grass", res, steps=3)
    assert m["reconstruction_psnr"] > 0 and 0 < m["edited_fraction"] < 1
    plain = edit_real_image(pipe, judge, image, "a dog on the grass", steps=3, depth=False,
                            map_edits=lambda s: delete(s, "dog"))  # fmt: skip
    assert plain.source_depth is None and set(seen[-1]) == {"seg"}
    assert np.array_equal(plain.edited_map, res.edited_map)
    assert not np.array_equal(np.asarray(plain.image), np.asarray(res.image))  # the depth reached the image factor
    seg_only = random_graph({"factors": {"seg": {"steps": 3}, "image": {"kind": "controlnet", "parents": ["seg"], "steps": 3}}})
    assert use_depth(seg_only, None) is False and use_depth(pipe, False) is False and use_depth(pipe, True) is True
    with pytest.raises(ValueError, match=r"does not read depth \(its conditions: \['seg'\]\)"):
        edit_real_image(seg_only, judge, image, "a dog on the grass", steps=3, depth=True, map_edits=lambda s: s)
    with pytest.raises(ValueError, match="give both source_depth and edited_depth"):
        render_edit(pipe, image, seg, seg, "a dog", steps=3, source_depth=depth)
    monkeypatch.setattr(type(pipe), "__call__", call)
    graph = pipe.save_pretrained(tmp_path / "graph")
    img = tmp_path / "real.png"
    image.save(img)
    out = tmp_path / "out"
    assert main(["edit-real", str(img), "--prompt", "a dog on the grass", "--delete", "dog", "--depth", "--graph",
                 str(graph), "--judge", str(tiny_judge_dir), "--steps", "2", "-o", str(out)]) == 0  # fmt: skip
    rec = json.loads((out / "record.json").read_text())
    assert rec["depth"] is True and {"depth-source.png", "depth-000.png"} <= set(rec["files"])
    assert all((out / f).exists() for f in rec["files"])
    from fgdm.pipelines.factor_graph import condition_rgb

    shown = np.asarray(Image.open(out / "depth-000.png"))
    assert np.array_equal(shown, condition_rgb("depth", res.edited_depth, 32))  # the edited depth, as the factor read it


def test_edit_metrics_recall_and_removal_on_known_maps(setup, monkeypatch):
    from fgdm.editing.real import RealEdit

    pipe, _, judge_dir, img = setup
    from fgdm.models.judge import load_judge

    src = np.full((32, 32), 83, np.uint8)  # grass
    src[2:10, 2:10] = 16  # a dog
    edited = src.copy()
    edited[2:6, 2:10], edited[6:10, 2:10] = 17, 83  # its top half relabelled as a horse, the rest deleted
    judged = src.copy()
    judged[2:4, 2:10], judged[6:10, 2:10] = 17, 83  # the judge sees the horse on half its rows; the dog still on rows 4-5
    monkeypatch.setattr("fgdm.editing.real.extract_map", lambda judge, image, size: judged.copy())
    image = Image.open(img)
    res = RealEdit(src, edited, image.resize((32, 32)), "a dog on the grass", "a horse on the grass")
    m = edit_metrics(pipe, load_judge(judge_dir), image, res.prompt, res, steps=2)
    assert m["edited_region_recall"] == {"horse": 0.5}  # grass (stuff) is not scored
    assert m["edited_region_removal"] == {"dog": 0.75}  # 6 of the dog's 8 rows no longer show a dog
    assert m["edited_region_background"] == {"dog": 0.5}  # 4 of them show grass, 2 a horse
    assert m["edited_fraction"] == round(64 / 1024, 4)


def test_text_edits_guide_the_seg_factor_away_from_the_classes_they_take_out(setup, monkeypatch):
    from fgdm.models.judge import load_judge

    pipe, _, judge_dir, img = setup
    seg = _known_map(monkeypatch)
    seg[20:28, 20:28] = 15  # and a cat
    negatives = []
    call = type(pipe).__call__
    monkeypatch.setattr(type(pipe), "__call__", lambda self, *a, **k: negatives.append((k["factors"], k.get("negative_prompt", "")))
                        or call(self, *a, **k))  # fmt: skip
    judge, image = load_judge(judge_dir), Image.open(img)
    a = edit_real_image(pipe, judge, image, "a dog and a cat on the grass", replace={"dog": "horse"}, remove=["cat"], steps=2)
    assert (["seg"], "a dog, a cat") in negatives and all(n == "" for f, n in negatives if f == ["image"])
    negatives.clear()
    b = edit_real_image(pipe, judge, image, "a dog and a cat on the grass", replace={"dog": "horse"}, remove=["cat"],
                        steps=2, negative=False)  # fmt: skip
    assert all(n == "" for _, n in negatives) and (["seg"], "") in negatives
    assert not np.array_equal(a.edited_map, b.edited_map)  # the negative prompt reached the seg factor


def test_an_edit_that_only_fills_background_in_is_re_rendered_without_guidance(setup, monkeypatch):
    from fgdm.editing import change_class, delete
    from fgdm.editing.real import FILL_GUIDANCE, fills_only
    from fgdm.models.judge import load_judge

    src = np.full((8, 8), 83, np.uint8)
    src[2:5, 2:5] = 16
    gone, cat, void = src.copy(), src.copy(), src.copy()
    gone[2:5, 2:5], cat[2:5, 2:5], void[2:5, 2:5] = 83, 15, 255
    assert fills_only(src, gone) and not fills_only(src, cat) and not fills_only(src, src) and not fills_only(src, void)
    pipe, _, judge_dir, img = setup
    _known_map(monkeypatch)
    judge, image = load_judge(judge_dir), Image.open(img)
    used = []
    call = type(pipe).__call__
    monkeypatch.setattr(type(pipe), "__call__", lambda self, *a, **k: used.append(k.get("guidance")) or call(self, *a, **k))
    res = edit_real_image(pipe, judge, image, "a dog on the grass", steps=2, map_edits=lambda s: delete(s, "dog"))
    assert res.render_guidance == FILL_GUIDANCE and used[-1] == {"image": FILL_GUIDANCE}
    res = edit_real_image(pipe, judge, image, "a dog on the grass", steps=2, map_edits=lambda s: change_class(s, "dog", "cat"))
    assert res.render_guidance is None and used[-1] == {"image": pipe.spec.factors["image"].guidance}
    res = edit_real_image(pipe, judge, image, "a dog on the grass", steps=2, guidance=4.0, map_edits=lambda s: delete(s, "dog"))
    assert res.render_guidance == 4.0 and used[-1] == {"image": 4.0}  # a given guidance is kept

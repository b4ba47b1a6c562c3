"""Object-level edits on rendered samples: expected pixels move, depth and sketch follow, nothing else changes."""

import logging

import numpy as np
import pytest

from fgdm.editing import (
    EditLog,
    MapSample,
    apply_edits,
    change_class,
    delete,
    duplicate,
    flip,
    move,
    paste,
    resize,
    resolve,
    scribble_text,
    thing_instances,
)
from fgdm.world.categories import category
from fgdm.world.dataset import make_sample
from fgdm.world.scene import WorldConfig


def _sample(index=0, n=2):
    cfg = WorldConfig.from_dict({**WorldConfig().to_dict(), "min_objects": n, "max_objects": n})
    return MapSample.from_render(make_sample(index, seed=3, size=128, config=cfg).render)


@pytest.fixture()
def s():
    return _sample()


def _largest(s):
    objs = s.objects()
    return max(objs, key=lambda i: objs[i][1])


def test_move_shifts_the_object_with_its_depth_and_edges_and_nothing_else(s):
    inst = _largest(s)
    name = s.objects()[inst][0]
    before = s.copy()
    out = move(s, inst, 6, 3)
    assert np.array_equal(s.seg, before.seg)  # the input is untouched
    new = inst  # the moved object keeps its instance id
    assert set(out.objects()) == set(s.objects())
    ys, xs = np.nonzero(out.instance == new)
    assert len(ys) > 0 and np.all(out.seg[ys, xs] == category(name).id)
    assert np.allclose(out.disparity[ys, xs], s.disparity[ys - 3, xs - 6])  # depth follows
    assert np.allclose(out.sketch[ys, xs], s.sketch[ys - 3, xs - 6])  # sketch follows
    others = (s.instance > 0) & (s.instance != inst)
    keep = others & (out.instance != new)
    assert np.array_equal(out.seg[keep], s.seg[keep])  # other objects unchanged where not covered
    left = (s.instance == inst) & (out.instance != new)
    assert all(not category(int(c)).is_thing for c in out.seg[left])  # the vacated area is background


def test_delete_fills_with_the_surrounding_stuff_and_smooth_depth(s):
    inst = _largest(s)
    mask = s.instance == inst
    out = delete(s, inst)
    assert inst not in out.objects() and not (out.instance == inst).any()
    assert all(not category(int(c)).is_thing for c in out.seg[mask])
    assert np.array_equal(out.seg[~mask], s.seg[~mask]) and np.array_equal(out.instance[~mask], s.instance[~mask])
    ring_vals = s.disparity[~mask]
    assert out.disparity[mask].min() >= ring_vals.min() - 1e-6 and out.disparity[mask].max() <= ring_vals.max() + 1e-6
    assert out.sketch[mask].max() == 0
    assert np.allclose(out.normals[~mask][:10], out.normals[~mask][:10])  # normals are derived, always available


def test_flip_mirrors_within_the_box(s):
    inst = _largest(s)
    out = flip(s, inst)
    src = s.instance == inst
    _ys, xs = np.nonzero(src)
    x0, x1 = xs.min(), xs.max()
    mirrored = np.zeros_like(src)
    mirrored[:, x0 : x1 + 1] = src[:, x0 : x1 + 1][:, ::-1]
    new = out.instance == inst  # the same object, the same id
    assert np.array_equal(new, mirrored & new) and new.sum() >= 0.8 * mirrored.sum()


def test_resize_scales_the_area_about_the_centre(s):
    inst = _largest(s)
    area = (s.instance == inst).sum()
    big = resize(s, inst, 1.5)
    grown = (big.instance == inst).sum()
    assert 1.6 * area < grown < 2.6 * area
    small = resize(s, inst, 0.5)
    assert 0 < (small.instance == inst).sum() < 0.4 * area
    assert set(big.objects()) == set(small.objects()) == set(s.objects())
    with pytest.raises(ValueError, match="scale"):
        resize(s, inst, 0)


def test_duplicate_paste_change_class_and_text(s):
    inst = _largest(s)
    name = s.objects()[inst][0]
    dup = duplicate(s, name, -10, 0)
    assert len(dup.objects()) == len(s.objects()) + 1 and inst in dup.objects()
    assert dup.objects()[s.instance.max() + 1][0] == name  # the copy gets a new id
    other = _sample(5)
    pasted = paste(s, other, _largest(other), 0, 0)
    assert other.objects()[_largest(other)][0] in {n for n, _ in pasted.objects().values()}
    cat = change_class(s, inst, "cat")
    assert np.all(cat.seg[s.instance == inst] == category("cat").id)
    assert np.array_equal(cat.instance, s.instance) and np.array_equal(cat.disparity, s.disparity)
    with pytest.raises(ValueError, match="stuff class"):
        change_class(s, inst, "grass")
    txt = scribble_text(s, "HELLO")
    changed = txt.sketch != s.sketch
    assert changed.sum() > 20 and np.array_equal(txt.seg, s.seg)
    ys, _xs = np.nonzero(changed)
    assert ys.max() - ys.min() < 64  # written in a band, not all over the map


def test_targets_and_errors(s, caplog):
    objs = s.objects()
    inst = _largest(s)
    assert resolve(s, objs[inst][0]) == inst and resolve(s, str(inst)) == inst
    with pytest.raises(ValueError, match="no object with instance id 99"):
        move(s, 99, 1, 1)
    with pytest.raises(ValueError, match="unknown category 'dragon'"):
        delete(s, "dragon")
    absent = next(c.name for c in map(category, range(80)) if c.name not in {n for n, _ in objs.values()})
    with pytest.raises(ValueError, match=f"no '{absent}' in this sample"):
        flip(s, absent)
    # a map with no objects at all (a sampled map may hold only background) says what it holds
    bare = MapSample.from_labels(np.where(np.isin(s.seg, [category(n).id for n, _ in objs.values()]),
                                       category("grass").id, s.seg).astype(np.uint8))  # fmt: skip
    assert bare.objects() == {}
    with pytest.raises(ValueError, match=r"objects: none \(the map holds only .*grass"):
        flip(bare, "dog")
    with pytest.raises(ValueError, match="entirely out of the frame"):
        move(s, inst, 500, 0)
    xs = np.nonzero(s.instance == inst)[1]
    with caplog.at_level(logging.WARNING):
        move(s, inst, 128 - (xs.min() + xs.max()) // 2, 0)  # the centre onto the right border
    assert "clipped" in caplog.text


def test_edit_log_replays_exactly(s):
    log = EditLog()
    inst = _largest(s)
    out = log.apply(s, "move", target=inst, dx=4, dy=-2)
    out = log.apply(out, "flip", target=inst)  # still its id after the move
    out = log.apply(out, "text", text="HI")
    again = apply_edits(s, log.edits)
    assert np.array_equal(out.seg, again.seg) and np.array_equal(out.sketch, again.sketch)
    assert log.edits[0] == {"op": "move", "target": inst, "dx": 4, "dy": -2}
    with pytest.raises(ValueError, match="unknown edit 'rotate'"):
        apply_edits(s, [{"op": "rotate"}])


def test_instances_of_a_generated_map_are_connected_components():
    seg = np.full((16, 16), category("grass").id, np.uint8)
    seg[1:4, 1:4] = seg[10:14, 10:14] = category("dog").id
    seg[1:4, 10:12] = category("cat").id
    inst = thing_instances(seg)
    assert len(np.unique(inst[inst > 0])) == 3 and inst[0, 0] == 0
    s = MapSample.from_labels(seg)
    assert resolve(s, "dog#2") != resolve(s, "dog") and s.objects()[resolve(s, "dog")][1] == 16
    with pytest.raises(ValueError, match="there are 2 'dog'"):
        resolve(s, "dog#3")


# ----------------------------------------------------------------------------- fgdm edit


@pytest.fixture()
def fgdm_run(random_graph, tmp_path):
    from fgdm.cli import main

    spec = {"factors": {"seg": {"steps": 2}, "depth": {"parents": ["seg"], "steps": 2},
                        "image": {"kind": "controlnet", "parents": ["seg", "depth"], "steps": 2}}}  # fmt: skip
    graph = random_graph(spec).save_pretrained(tmp_path / "graph")
    run = tmp_path / "run"
    assert main(["generate", "a dog and a cat", "--factors", "seg,depth,image", "--graph", str(graph), "-o", str(run),
                 "--quiet"]) == 0  # fmt: skip
    return run


def test_fgdm_edit_rerenders_logs_and_replays(fgdm_run, tmp_path, capsys):
    import json

    from fgdm.cli import main
    from fgdm.editing import sample_from_run
    from fgdm.editing.real import map_edit_prompt

    s, _ = sample_from_run(fgdm_run)
    name = s.objects()[_largest(s)][0]
    out = tmp_path / "edit"
    assert main(["edit", str(fgdm_run), "--move", f"{name}:+3,-2", "--flip", name, "--change-class", f"{name}:cat",
                 "-o", str(out), "--quiet"]) == 0  # fmt: skip
    rec = json.loads((out / "record.json").read_text())
    assert [e["op"] for e in rec["edits"]] == ["move", "flip", "change_class"]  # in the order given
    assert rec["edits"][0] == {"op": "move", "target": name, "dx": 3, "dy": -2} and rec["seed"] == 0
    assert {"image-000.png", "seg-000.png", "depth-000.png", "before_after.png"} <= set(rec["files"])
    assert rec["parameters"]["given"] == ["depth", "seg"] and rec["parameters"]["keep_prompt"] is False
    edited, _ = sample_from_run(out)
    assert rec["render_prompt"] == map_edit_prompt("a dog and a cat", s.seg, edited.seg)  # the prompt follows the map
    kept = tmp_path / "kept"
    assert main(["edit", str(fgdm_run), "--delete", name, "--keep-prompt", "-o", str(kept), "--quiet"]) == 0
    assert json.loads((kept / "record.json").read_text())["render_prompt"] == "a dog and a cat"
    # --keep-rest: the run's image, inverted with its maps, regenerated only where the maps changed
    rest = tmp_path / "rest"
    assert main(["edit", str(fgdm_run), "--move", f"{name}:+3,-2", "--keep-rest", "-o", str(rest), "--quiet"]) == 0
    rrec = json.loads((rest / "record.json").read_text())
    assert rrec["parameters"]["keep_rest"] is True
    assert rrec["parameters"]["render_guidance"] == rrec["parameters"]["guidance"]  # a move: the run's guidance
    gone = tmp_path / "gone"  # a deletion only fills background in: re-rendered without guidance
    assert main(["edit", str(fgdm_run), "--delete", name, "--keep-rest", "-o", str(gone), "--quiet"]) == 0
    grec = json.loads((gone / "record.json").read_text())["parameters"]
    from fgdm.editing.real import FILL_GUIDANCE

    assert grec["render_guidance"] == FILL_GUIDANCE and grec["guidance"] == rrec["parameters"]["guidance"]
    from PIL import Image

    from fgdm.editing.maps import sample_conditions
    from fgdm.editing.real import render_region
    from fgdm.pipelines.factor_graph import FactorGraphPipeline

    pipe = FactorGraphPipeline.from_pretrained(json.loads((fgdm_run / "record.json").read_text())["graph"]["path"])
    parents = pipe.spec.factors["image"].parents
    want = render_region(pipe, Image.open(fgdm_run / "image-000.png").convert("RGB"),
                         {k: v for k, v in sample_conditions(s).items() if k in parents},
                         {k: v for k, v in sample_conditions(apply_edits(s, rrec["edits"])).items() if k in parents},
                         "a dog and a cat", rrec["render_prompt"], size=32, steps=2, seed=0)  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(rest / "image-000.png")), np.asarray(want))
    assert (rest / "image-000.png").read_bytes() != (out / "image-000.png").read_bytes()
    again = tmp_path / "again"
    assert main(["edit", str(fgdm_run), "--edits-from", str(out / "record.json"), "-o", str(again), "--quiet"]) == 0
    for f in ("image-000.png", "seg-000.png", "depth-000.png"):
        assert (out / f).read_bytes() == (again / f).read_bytes()
    capsys.readouterr()
    for argv, needle in [
        (["--delete", "giraffe"], "no 'giraffe' in this sample"),
        (["--move", "dog"], "expected OBJECT:dx,dy"),
        (["--resize", f"{name}:big"], "expected OBJECT:SCALE"),
        ([], "no edits given"),
        (["--text", "HELLO"], "no sketch map"),
    ]:
        assert main(["edit", str(fgdm_run), *argv, "-o", str(tmp_path / "bad")]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "record.json").write_text('{"kind": "generate"}')
    assert main(["edit", str(tmp_path / "plain"), "--flip", "dog"]) == 2
    assert "needs an FG-DM run" in capsys.readouterr().err


def test_fgdm_edit_takes_sbpc_runs_and_its_own_runs(random_graph, tmp_path):
    """``fgdm edit`` of an SBPC run re-renders with the chosen candidate's seed and the run's image
    settings; an edit run can be edited again, keeping the seed and settings it recorded."""
    import json

    from fgdm.cli import main
    from fgdm.editing import sample_from_run

    # depth drawn at half the image's size, as the shipped graph draws it beside SBPC's full-size seg map
    spec = {"factors": {"seg": {"steps": 2}, "depth": {"parents": ["seg"], "steps": 2, "size": 16},
                        "image": {"kind": "controlnet", "parents": ["seg", "depth"], "steps": 2}}}  # fmt: skip
    graph = random_graph(spec).save_pretrained(tmp_path / "graph")
    run = tmp_path / "sbpc"
    assert main(["generate", "a dog and a cat", "--sbpc", "3", "--seed", "5", "--graph", str(graph), "--cond-steps",
                 "2", "--cond-size", "16", "--steps", "3", "--guidance-scale", "2", "-o", str(run), "--quiet"]) == 0  # fmt: skip
    src = json.loads((run / "record.json").read_text())
    chosen_seed = src["candidates"][src["chosen"]]["seed"]
    assert chosen_seed == 5 + src["chosen"]
    from PIL import Image

    assert Image.open(run / "depth-000.png").size == (16, 16) != Image.open(run / "seg-000.png").size
    s, _ = sample_from_run(run)
    assert s.disparity.shape == s.seg.shape  # read on the seg map's grid
    name = s.objects()[_largest(s)][0]
    first = tmp_path / "edit1"
    assert main(["edit", str(run), "--flip", name, "-o", str(first), "--quiet"]) == 0
    rec1 = json.loads((first / "record.json").read_text())
    assert rec1["source"]["kind"] == "generate-sbpc" and rec1["seed"] == chosen_seed
    assert rec1["parameters"] | {"given": None} == {"size": src["parameters"]["image_size"], "steps": 3,
                                                     "guidance": 2.0, "render_guidance": 2.0, "given": None, "keep_prompt": False,
                                                     "keep_rest": False}  # fmt: skip
    second = tmp_path / "edit2"
    assert main(["edit", str(first), "--move", f"{name}:+2,0", "-o", str(second), "--quiet"]) == 0
    rec2 = json.loads((second / "record.json").read_text())
    assert rec2["source"] == {"run": str(first.resolve()), "sample": 0, "kind": "edit"}
    assert (rec2["seed"], rec2["parameters"]) == (rec1["seed"], rec1["parameters"])
    assert rec2["edits"] == [{"op": "move", "target": name, "dx": 2, "dy": 0}]
    assert (second / "image-000.png").read_bytes() != (first / "image-000.png").read_bytes()


def test_edit_keep_rest_script(random_graph, tmp_path, capsys, monkeypatch):
    """scripts/edit_keep_rest.py (results.md): both ways of re-rendering an object edit, measured."""
    import json
    import runpy
    from pathlib import Path

    spec = {"factors": {"seg": {"steps": 2}, "image": {"kind": "controlnet", "parents": ["seg"], "steps": 2}}}
    graph = random_graph(spec).save_pretrained(tmp_path / "graph")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat on the grass\na bus on the road\n")
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "edit_keep_rest.py")
    monkeypatch.setattr("sys.argv", ["x", "--prompts", str(prompts), "--n", "2", "--graph", str(graph), "--dx", "2"])
    runpy.run_path(script, run_name="__main__")
    got = json.loads(capsys.readouterr().out)
    assert set(got) == {"original (object before the move)", "same seed", "keep rest"}
    for way in ("same seed", "keep rest"):
        assert got[way]["edits"] >= 1 and got[way]["seconds"] > 0 and 0 <= got[way]["moved_object_recall"] <= 1
        assert got[way]["unchanged_psnr"] > 0  # (which way keeps more depends on the VAE: random here)
    for argv, err in ((["--graph", str(tmp_path / "missing")], "does not exist"),
                      (["--prompts", str(tmp_path / "none.txt")], "none.txt")):  # fmt: skip
        monkeypatch.setattr("sys.argv", ["x", "--prompts", str(prompts), "--graph", str(graph), *argv])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 2 and err in capsys.readouterr().err


def test_paste_from_a_rendered_export_of_another_size(fgdm_run, tmp_path):
    """An object pasted from a `fgdm world render` export (here 64 px, into a 32-px sampled map):
    the export's sample is read with its instances, disparity and sketch, resized to the sample,
    and the object lands at the offset; `fgdm edit --paste EXPORT#K:OBJ:dx,dy` records and replays it."""
    import json

    from fgdm.cli import main
    from fgdm.editing import paste_source, sample_from_export, sample_from_run
    from fgdm.world.export import export_dataset

    export = tmp_path / "world"
    export_dataset(export, n=3, size=64, seed=3)
    src = sample_from_export(export, 1)
    r = make_sample(1, seed=3, size=64).render
    assert np.array_equal(src.seg, r.seg) and np.array_equal(src.instance, r.instance)
    assert np.allclose(src.disparity, MapSample.from_render(r).disparity, atol=1 / 255)  # 8-bit depth
    assert src.sketch is not None and paste_source(export, 1).seg.shape == (64, 64)
    half = src.resized((32, 32))
    assert half.seg.shape == half.instance.shape == half.disparity.shape == (32, 32)
    assert np.array_equal(half.seg, src.seg[1::2, 1::2]) and np.array_equal(half.instance, src.instance[1::2, 1::2])
    s, _ = sample_from_run(fgdm_run)
    obj = _largest(src)
    name = src.objects()[obj][0]
    pasted = paste(s, src, obj, 2, 1)  # a 64-px source into the 32-px map
    new = pasted.instance.max()
    assert pasted.objects()[new][0] == name and new not in s.objects()
    ys, xs = np.nonzero(pasted.instance == new)
    hy, hx = np.nonzero(half.instance == obj)
    assert set(zip(ys.tolist(), xs.tolist(), strict=True)) <= set(zip((hy + 1).tolist(), (hx + 2).tolist(), strict=True))
    out = tmp_path / "pasted"
    assert main(["edit", str(fgdm_run), "--paste", f"{export}#1:{obj}:+2,+1", "-o", str(out), "--quiet"]) == 0
    rec = json.loads((out / "record.json").read_text())
    assert rec["edits"] == [{"op": "paste", "source_run": str(export), "source_sample": 1, "target": obj, "dx": 2, "dy": 1}]
    edited, _ = sample_from_run(out)
    assert (edited.seg == category(name).id).sum() >= (s.seg == category(name).id).sum()
    assert np.array_equal(apply_edits(s, rec["edits"]).seg, pasted.seg)  # the record replays the paste
    with pytest.raises(ValueError, match=r"sample must be in 0\.\.2"):
        sample_from_export(export, 3)
    with pytest.raises(ValueError, match="neither an FG-DM run"):
        paste_source(tmp_path, 0)
    (export / "seg_ids" / "000002.png").unlink()
    with pytest.raises(ValueError, match=r"sample 2: cannot read 'seg_ids/000002.png'"):
        sample_from_export(export, 2)
    with pytest.raises(ValueError, match="paste: no 'giraffe' in the source sample; objects: "):
        paste(s, src, "giraffe")

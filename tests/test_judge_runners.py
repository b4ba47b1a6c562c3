import json
from pathlib import Path

import pytest
import torch

from fgdm.cli import main
from fgdm.models.judge import Judge, JudgeConfig, load_judge


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    """A judge trained for a few CPU steps through the CLI (weights are near random)."""
    tmp = tmp_path_factory.mktemp("judge")
    cfg = tmp / "j.yaml"
    cfg.write_text(f"component: judge\noutput_dir: {tmp}/j\nsteps: 2\nbatch_size: 4\nlog_every: 1\ncheckpoint_every: 2\n"
                   "model: {channels: [8, 16], groups: 4}\ndata: {n_scenes: 8, size: 64, holdout_n: 4, holdout_seed: 5}\n")  # fmt: skip
    assert main(["train", "judge", "--config", str(cfg), "--quiet"]) == 0
    metrics = json.loads((tmp / "j" / "metrics.json").read_text())
    assert {"presence_f1", "miou", "depth_mae"} <= set(metrics)
    return tmp / "j" / "final"


def test_judge_round_trip_and_shapes(judge_dir):
    j = load_judge(judge_dir)
    x = torch.rand(2, 3, 96, 96) * 2 - 1
    logits, depth = j(x)
    assert logits.shape == (2, 90, 96, 96) and depth.shape == (2, 1, 96, 96)
    assert depth.min() >= 0 and depth.max() <= 1
    again = Judge.from_pretrained(judge_dir)
    assert torch.allclose(again(x)[0], logits)
    assert Judge(JudgeConfig(channels=[8, 16], groups=4, input_size=64)).segment(x).shape == (2, 96, 96)


def test_patchify_stem_judge(tmp_path):
    """stem_stride 4: the U-Net runs at a quarter of the input side, the outputs are at the input
    size, and the setting survives a save/load round trip."""
    j = Judge(JudgeConfig(channels=[8, 16], groups=4, input_size=64, stem_stride=4)).eval()
    assert j.stem[0].stride == (4, 4)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    feats = j.stem(x)
    assert feats.shape[-2:] == (16, 16)
    logits, depth = j(x)
    assert logits.shape == (2, 90, 64, 64) and depth.shape == (2, 1, 64, 64)
    again = Judge.from_pretrained(j.save_pretrained(tmp_path / "s4"))
    assert again.config.stem_stride == 4
    j = j.half().float()  # the saved weights are fp16
    assert torch.allclose(again(x)[0], j(x)[0], atol=1e-4)
    with pytest.raises(ValueError, match="stem_stride must be 2 or 4, got 3"):
        JudgeConfig(stem_stride=3)
    with pytest.raises(ValueError, match=r"model: unknown judge setting\(s\) \['stem_strid'\]"):
        JudgeConfig.from_dict({"stem_strid": 4}, "model")


def test_flip_averaged_inference_is_mirror_equivariant(tmp_path, capsys):
    """flip_average: predict() is the mean of the class probabilities (and depths) of the image and of
    its mirror image, so mirroring the input mirrors the segmentation exactly; the raw network is not;
    the setting survives a save/load round trip and `fgdm eval judge --flip-average` overrides it."""
    torch.manual_seed(0)
    j = Judge(JudgeConfig(channels=[8, 16], groups=4, input_size=64, stem_stride=4)).eval()
    for p in j.parameters():  # a random judge's outputs are nearly constant: make them vary
        p.data.normal_(0, 0.5)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert not torch.equal(j.predict(x.flip(-1))[0].argmax(1), j.predict(x)[0].argmax(1).flip(-1))
    j.config.flip_average = True
    scores, depth = j.predict(x)
    with torch.no_grad():
        (l0, _), (l1, _) = j(x, full_size=False), j(x.flip(-1), full_size=False)
    want = ((l0.softmax(1) + l1.flip(-1).softmax(1)) / 2).log()
    up = torch.nn.functional.interpolate(want, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(scores, up, atol=1e-5) and scores.shape == (2, 90, 64, 64) and depth.shape == (2, 1, 64, 64)
    assert torch.equal(j.segment(x.flip(-1)), j.segment(x).flip(-1))
    assert torch.allclose(j.predict(x.flip(-1))[1], depth.flip(-1), atol=1e-6)
    again = Judge.from_pretrained(j.save_pretrained(tmp_path / "flip"))
    assert again.config.flip_average is True
    with pytest.raises(ValueError, match="flip_average must be true or false, got 'yes'"):
        JudgeConfig(flip_average="yes")
    for flag, want_flag in (([], True), (["--no-flip-average"], False)):
        assert main(["eval", "judge", "--judge", str(tmp_path / "flip"), "--n", "2", "--seed", "3", "--json", *flag]) == 0
        assert json.loads(capsys.readouterr().out)["flip_average"] is want_flag


def test_multi_size_inference_averages_every_view(tmp_path, capsys):
    """tta_sizes: predict() averages the class probabilities of the image read at each side (and
    mirrored, with flip_average) at the image's size, and the depths of the views at input_size (of
    every view if input_size is not a side); one side alone without mirroring is the plain network;
    the setting is checked, saved, and `fgdm eval judge --tta-sizes` overrides it."""
    torch.manual_seed(0)
    j = Judge(JudgeConfig(channels=[8, 16], groups=4, input_size=64, stem_stride=4)).eval()
    for p in j.parameters():
        p.data.normal_(0, 0.5)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    j.config.tta_sizes = [64]
    assert torch.allclose(j.predict(x)[0].exp(), j(x)[0].softmax(1), atol=1e-6)  # one view: the network
    j.config.tta_sizes, j.config.flip_average = [48, 80], True
    scores, depth = j.predict(x)
    with torch.no_grad():
        views = [(j(v, size=s), m) for s in (48, 80) for v, m in ((x, False), (x.flip(-1), True))]
    want = sum((lg.flip(-1) if m else lg).softmax(1) for (lg, _), m in views) / 4
    want_d = sum((d.flip(-1) if m else d) for (_, d), m in views) / 4
    assert torch.allclose(scores.exp(), want, atol=1e-6) and torch.allclose(depth, want_d, atol=1e-6)
    assert scores.shape == (2, 90, 64, 64) and torch.equal(j.segment(x.flip(-1)), j.segment(x).flip(-1))
    assert Judge.from_pretrained(j.save_pretrained(tmp_path / "tta")).config.tta_sizes == [48, 80]
    j.config.tta_sizes = [64, 80]  # input_size among the sides: the depth is its views' alone
    with torch.no_grad():
        d0, d1 = j(x)[1], j(x.flip(-1))[1].flip(-1)
    assert torch.allclose(j.predict(x)[1], (d0 + d1) / 2, atol=1e-6)
    j.config.tta_sizes = [48, 80]
    for bad in ([], [64, 64], [16], "64", [True]):
        with pytest.raises(ValueError, match="tta_sizes must be a list of distinct image sides"):
            JudgeConfig(tta_sizes=bad)
    base = ["eval", "judge", "--judge", str(tmp_path / "tta"), "--n", "2", "--seed", "3", "--json"]
    for flag, want_sizes in (([], [48, 80]), (["--tta-sizes", "64,96"], [64, 96]), (["--tta-sizes", "none"], None)):
        assert main([*base, *flag]) == 0
        assert json.loads(capsys.readouterr().out)["tta_sizes"] == want_sizes
    for bad in ("64,x", "64,64"):
        with pytest.raises(SystemExit) as e:
            raise SystemExit(main([*base, "--tta-sizes", bad]))
        assert e.value.code == 2 and "--tta-sizes" in capsys.readouterr().err


def test_judge_tally_on_constructed_maps():
    """Known answers: presence TP/FP/FN, P/R/F1, where the errors are, per-class scores, mIoU, depth."""
    import numpy as np

    from fgdm.training.judge import JudgeTally
    from fgdm.world.categories import THINGS, category

    def cid(name):
        return category(name).id

    ground = np.full((64, 64), len(THINGS), np.uint8)  # a stuff class; T = 0.3% of 4,096 px = 12.3 px
    truth = ground.copy()
    truth[0:10, 0:10] = cid("dog")  # 100 px: 8.1 T
    truth[20:24, 20:24] = cid("cat")  # 16 px: 1.3 T
    truth[40, 40:42] = cid("bird")  # 2 px: present below the threshold
    pred = ground.copy()
    pred[0:10, 0:10] = cid("dog")  # seen; the cat missed
    pred[38:43, 38:43] = cid("bird")  # 25 px: a false presence of a class present below T
    pred[50:55, 50:55] = cid("horse")  # 25 px each: false presences of absent classes
    pred[56:61, 50:55] = cid("sheep")
    tally = JudgeTally()
    tally.add(pred, truth, np.zeros((64, 64)), np.full((64, 64), 0.5), style="sketch")
    both = ground.copy()
    both[30:36, 30:36] = cid("car")  # 36 px: 2.9 T, seen exactly
    tally.add(both, both, np.full((64, 64), 0.25), np.full((64, 64), 0.25), style="photo")
    r = tally.result()  # TP 2 (dog, car), FP 3 (bird, horse, sheep), FN 1 (cat)
    assert (r["presence_precision"], r["presence_recall"], r["presence_f1"]) == (0.4, 0.6667, 0.5)
    assert r["false_presences"] == {"absent": 2, "below_threshold": 1}
    assert r["misses_by_true_area"] == {"[T,2T)": 1, "[2T,4T)": 0, ">=4T": 0}
    assert r["per_class"]["cat"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert r["per_class"]["horse"]["precision"] == 0.0 and r["per_class"]["dog"]["recall"] == 1.0
    assert r["depth_mae"] == 0.25
    # sketch: TP 1, FP 3, FN 1 -> F1 2/6; photo: TP 1 only
    assert r["presence_f1_by_style"] == {"photo": {"images": 1, "presence_f1": 1.0},
                                         "sketch": {"images": 1, "presence_f1": 0.3333}}  # fmt: skip
    assert r["miou_things"] < 1 and r["stuff_iou"][category(len(THINGS)).name] < 1
    exact = JudgeTally()
    exact.add(both, both)
    assert exact.result()["miou"] == 1.0 and exact.result()["presence_f1"] == 1.0
    big = ground.copy()
    big[0:20, 0:20] = cid("bus")  # 400 px: 32 T, missed
    tally.add(ground, big)
    assert tally.result()["misses_by_true_area"][">=4T"] == 1


def test_evaluate_judge_scores_a_judge_that_sees_the_truth():
    """evaluate_judge end to end with an oracle (it looks each render up): F1 1, mIoU 1, depth 0."""
    import numpy as np

    from fgdm.training.judge import evaluate_judge
    from fgdm.world import make_sample
    from fgdm.world.categories import NUM_CLASSES
    from fgdm.world.conditions import normalize_depth

    samples = [make_sample(i, seed=11, size=64) for i in range(5)]
    truth = {s.render.image.tobytes(): s for s in samples}

    class Oracle(torch.nn.Module):
        config = JudgeConfig(channels=[8, 16], groups=4)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def predict(self, x):
            imgs = ((x + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            found = [truth[np.ascontiguousarray(im).tobytes()] for im in imgs]
            seg = torch.from_numpy(np.stack([s.render.seg for s in found])).long()
            depth = torch.from_numpy(np.stack([normalize_depth(s.render.depth) for s in found])).float()
            return torch.nn.functional.one_hot(seg, NUM_CLASSES).permute(0, 3, 1, 2).float(), depth[:, None]

    r = evaluate_judge(Oracle(), n=5, seed=11, size=64, batch=2, progress=False)
    assert r["presence_f1"] == 1.0 and r["miou"] == 1.0 and r["depth_mae"] < 1e-6
    assert sum(v["images"] for v in r["presence_f1_by_style"].values()) == 5
    assert r["false_presences"] == {"absent": 0, "below_threshold": 0} and sum(r["misses_by_true_area"].values()) == 0


def test_presence_loss_targets_false_and_missed_presences():
    """presence_loss is ~0 for a confident correct map, large for a stray patch of an absent class
    covering >= the presence threshold, large for a present class that is not predicted, and blind
    to classes present below the threshold (those are left out)."""
    from fgdm.training.judge import presence_loss
    from fgdm.world.categories import THINGS

    n = 90
    seg = torch.full((1, 64, 64), len(THINGS), dtype=torch.long)  # a stuff class everywhere
    seg[0, 10:30, 10:30] = 3  # a present thing (400 px >> k = 12)
    seg[0, 50, 50:55] = 7  # a sliver of thing 7 (5 px < k): ambiguous, left out

    def logits_for(m):
        return torch.nn.functional.one_hot(m, n).permute(0, 3, 1, 2).float() * 20

    good = presence_loss(logits_for(seg), seg)
    assert good < 1e-4
    stray = seg.clone()
    stray[0, 40:44, 40:44] = 5  # 16 px >= k of an absent class: a false presence
    # the loss is a mean over (image, thing class) pairs (~80 here): one false presence of ~14 nats
    assert presence_loss(logits_for(stray), seg) > 0.1
    missed = seg.clone()
    missed[0, 10:30, 10:30] = len(THINGS) + 1
    assert presence_loss(logits_for(missed), seg) > 0.1
    sliver_gone = seg.clone()
    sliver_gone[0, 50, 50:55] = len(THINGS)
    assert presence_loss(logits_for(sliver_gone), seg) < 1e-4  # neither seeing nor missing it costs
    logits = (logits_for(stray) / 4).requires_grad_()  # not saturated
    presence_loss(logits, seg).backward()
    assert logits.grad[0, 5, 40:44, 40:44].abs().sum() > 0  # the gradient reaches the stray patch


def test_bad_judge_paths(tmp_path):
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        load_judge(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="could not be loaded"):
        Judge.from_pretrained(tmp_path)


def test_eval_judge_cli(judge_dir, capsys, tmp_path):
    assert main(["eval", "judge", "--judge", str(judge_dir), "--n", "4", "--seed", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert 0 <= r["presence_f1"] <= 1 and 0 <= r["miou"] <= 1 and "per_class" not in r and "sheet" not in r
    # the error sheet: one row per render with a presence error (a near-random judge errs on each)
    sheet = tmp_path / "errors.png"
    args = ["eval", "judge", "--judge", str(judge_dir), "--n", "4", "--seed", "3", "--json", "--sheet", str(sheet)]
    assert main([*args, "--sheet-rows", "3"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["sheet"] == str(sheet) and r["presence_f1"] < 1
    from PIL import Image

    w, h = Image.open(sheet).size
    assert w == 3 * 128 and h > 3 * 128  # 3 columns, 3 rows of tiles and their captions
    assert main(args) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main([*args[:-1], str(tmp_path / "e.jpg")]) == 2 and "must be a .png" in capsys.readouterr().err
    plot = tmp_path / "classes.png"  # every class's precision and recall, one row each, in a chart
    base = ["eval", "judge", "--judge", str(judge_dir), "--n", "4", "--seed", "3", "--json"]
    assert main([*base, "--per-class-plot", str(plot)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["per_class_plot"] == str(plot) and "per_class" not in r and Image.open(plot).size[1] > 40 * 15
    assert main([*base, "--per-class-plot", str(plot)]) == 2 and "--per-class-plot" in capsys.readouterr().err


def test_benchmark_runners_resume_and_score(tiny_sd_dir, judge_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat\na photo of a bus\n")
    out = tmp_path / "run"
    argv = ["eval", "recall", "--prompts", str(prompts), "--model", str(tiny_sd_dir), "--judge", str(judge_dir),
            "--images-per-prompt", "2", "--steps", "2", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"mean_recall", "all_present_rate"} <= set(r) and r["n"] == 4
    assert 0.0 <= r["shuffled_recall"] <= 1.0  # every prompted category is missing from some prompt
    rows = [json.loads(f.read_text()) for f in sorted((out / "results").glob("*.json"))]
    first = [r_["objects"][0] in r_["present"] for r_ in rows]  # 1st named object: all 4 images
    second = [r_["objects"][1] in r_["present"] for r_ in rows if len(r_["objects"]) > 1]  # only the pair's 2
    assert len(second) == 2
    assert r["presence_by_position"] == [round(100 * sum(first) / 4, 2), round(100 * sum(second) / 2, 2)]
    from PIL import Image

    assert Image.open(out / "sheet.png").size[0] == 4 * 128  # both prompts' two images in one row of tiles
    assert Image.open(out / "plot.png").size == (520, 320)  # presence by named position
    assert len(list((out / "images").glob("*.png"))) == 4
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    (out / "results" / "p00001-01.json").unlink()  # simulate an interrupted run
    stamp = (out / "images" / "p00000-00.png").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in again.items() if k != "seconds_per_image"} == {
        k: v for k, v in r.items() if k != "seconds_per_image"
    }
    assert (out / "images" / "p00000-00.png").stat().st_mtime_ns == stamp  # finished images were not regenerated
    assert main([*argv[:-3], "--steps", "3", "--out", str(out), "--resume"]) == 2
    assert "other settings" in capsys.readouterr().err

    mg = tmp_path / "mg.json"
    mg.write_text(
        json.dumps([{"obj_1_attributes": ["dog"], "obj_2_attributes": ["cat"], "text": "a photo of a dog, and a cat."}])
    )
    assert main(["eval", "multigen", "--prompts", str(mg), "--model", str(tiny_sd_dir), "--judge", str(judge_dir),
                 "--images-per-prompt", "3", "--steps", "2", "--out", str(tmp_path / "mg"), "--json"]) == 0  # fmt: skip
    assert set(json.loads(capsys.readouterr().out)) >= {"MG2", "MG5"}
    with pytest.raises(SystemExit):  # image k of prompt p has seed + 1000 p + k: at most 1000 a prompt
        main(["eval", "multigen", "--prompts", str(mg), "--images-per-prompt", "1001"])
    assert "--images-per-prompt: must be <= 1000, got 1001" in capsys.readouterr().err
    assert (tmp_path / "mg" / "plot.png").exists()

    rel = tmp_path / "rel.json"
    main(["eval", "make-prompts", "--recipe", "relations", "--n", "2", "--out", str(rel)])
    capsys.readouterr()
    assert main(["eval", "visor", "--prompts", str(rel), "--model", str(tiny_sd_dir), "--judge", str(judge_dir),
                 "--steps", "2", "--out", str(tmp_path / "v"), "--json"]) == 0  # fmt: skip
    assert "object_accuracy" in json.loads(capsys.readouterr().out)
    assert main(["eval", "visor", "--prompts", str(prompts), "--model", str(tiny_sd_dir), "--judge", str(judge_dir),
                 "--steps", "2", "--out", str(tmp_path / "v2")]) == 2  # fmt: skip
    assert "relation prompts" in capsys.readouterr().err


def test_batches_across_prompts_change_no_image(tiny_sd_dir, judge_dir, tmp_path, capsys):
    """--batch-size only groups work: one image at a time and 3 at a time across prompts give the
    same seeds and the same images (up to rounding), and a run resumes with another batch size."""
    import numpy as np
    from PIL import Image

    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat\na photo of a bus\na cake on a table\n")

    def run(name: str, batch: int, *extra: str) -> Path:
        out = tmp_path / name
        assert main(["eval", "recall", "--prompts", str(prompts), "--model", str(tiny_sd_dir), "--judge",
                     str(judge_dir), "--images-per-prompt", "2", "--steps", "2", "--out", str(out),
                     "--batch-size", str(batch), "--json", "--quiet", *extra]) == 0  # fmt: skip
        capsys.readouterr()
        return out

    one, three = run("one", 1), run("three", 3)
    names = sorted(f.name for f in (one / "results").glob("*.json"))
    assert len(names) == 6 and names == sorted(f.name for f in (three / "results").glob("*.json"))
    for name in names:
        a, b = (json.loads((d / "results" / name).read_text()) for d in (one, three))
        assert a["seed"] == b["seed"] == 1000 * a["prompt_index"] + a["k"] and a["prompt"] == b["prompt"]
        ia, ib = (np.asarray(Image.open(d / "images" / name.replace(".json", ".png")), dtype=int) for d in (one, three))
        assert np.abs(ia - ib).max() <= 2
    (three / "results" / "p00002-01.json").unlink()
    (three / "results" / "p00000-00.json").unlink()
    run("three", 2, "--resume")  # another batch size is not another setting
    assert len(list((three / "results").glob("*.json"))) == 6
    with pytest.raises(SystemExit) as e:
        main(["eval", "recall", "--prompts", str(prompts), "--batch-size", "0"])
    assert e.value.code == 2 and "--batch-size: must be >= 1, got 0" in capsys.readouterr().err


def test_runner_splits_prompts_across_processes(tiny_sd_dir, judge_dir, tmp_path, monkeypatch):
    """Under `accelerate launch` each process draws every num_processes-th prompt into the shared
    run folder, and every process then reads all results: the rows equal a one-process run's."""
    import contextlib

    import accelerate

    from fgdm.eval.prompts import load_prompt_entries
    from fgdm.eval.runner import run_prompts
    from fgdm.models.judge import load_judge
    from fgdm.pipelines.text2image import Text2ImagePipeline

    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat\na photo of a bus\na cake on a table\n")
    entries = load_prompt_entries(prompts)
    pipe, judge = Text2ImagePipeline.from_pretrained(tiny_sd_dir), load_judge(judge_dir, "cpu")
    kw = {"pipe": pipe, "judge": judge, "images_per_prompt": 2, "steps": 2, "guidance_scale": 7.5, "seed": 0,
          "size": None, "progress": False}  # fmt: skip
    alone = run_prompts(entries, tmp_path / "one", **kw)
    drawn = {}

    class Barrier(Exception):
        pass

    class Process:  # what accelerate's PartialState tells process `index` of 2
        def __init__(self, index):
            self.process_index, self.num_processes, self.is_main_process = index, 2, index == 0

        def wait_for_everyone(self):
            if self.process_index == 1:  # process 1 reaches the barrier first: stop it there
                raise Barrier

    shared = tmp_path / "two"
    for index in (1, 0):  # process 1 draws its share; process 0 draws the rest, then reads everything
        monkeypatch.setattr(accelerate, "PartialState", lambda i=index: Process(i))
        before = set((shared / "results").glob("*.json")) if shared.exists() else set()
        with contextlib.suppress(Barrier):
            rows = run_prompts(entries, shared, **kw)
        drawn[index] = sorted({f.name[:6] for f in set((shared / "results").glob("*.json")) - before})
    assert drawn == {1: ["p00001"], 0: ["p00000", "p00002"]}
    assert [(r["prompt_index"], r["k"], r["seed"], r["present"]) for r in rows] == [
        (r["prompt_index"], r["k"], r["seed"], r["present"]) for r in alone
    ]


@pytest.mark.parametrize("argv", [
    ["eval", "recall", "--prompts", "PROMPTS", "--model", "/nonexistent/model"],
    ["eval", "quality", "--prompts", "PROMPTS", "--model", "/nonexistent/model"],
    ["eval", "sbpc", "--prompts", "PROMPTS", "--graph", "/nonexistent/graph"],
    ["eval", "fgdm", "--prompts", "PROMPTS", "--graph", "/nonexistent/graph"],
    ["eval", "real-edit", "--graph", "/nonexistent/graph"],
])  # fmt: skip
def test_runners_refuse_their_folder_before_loading_models(argv, tmp_path, capsys):
    """A finished run (without --resume) or a foreign folder is refused at once, not after minutes
    of model loading: the model paths here do not exist, and the error is about the folder."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat\n")
    argv = [str(prompts) if a == "PROMPTS" else a for a in argv]
    done, foreign = tmp_path / "done", tmp_path / "foreign"
    done.mkdir()
    (done / "record.json").write_text('{"settings": {}}')
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main([*argv, "--out", str(done)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main([*argv, "--out", str(foreign)]) == 2
    assert "holds no fgdm run" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert main([*argv, "--out", str(foreign / "notes.txt")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "fresh")]) != 0
    assert "nonexistent" in capsys.readouterr().err  # past the folder check, the model path is what fails


@pytest.mark.parametrize("stride", [2, 4])
def test_losses_at_sampled_pixels_are_the_full_size_losses(stride):
    """``loss_points``: the network's own maps read at sampled pixels equal the full-size upsampled
    maps there, and the sampled losses estimate the dense ones (many points: within a few percent),
    with gradient to every parameter."""
    from fgdm.training.judge import at_pixels, class_weights, judge_loss
    from fgdm.world.categories import VOID_ID

    torch.manual_seed(0)
    j = Judge(JudgeConfig(channels=[8, 16], groups=4, input_size=32, stem_stride=stride))
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    full_logits, full_depth = j(x)
    logits, depth = j(x, full_size=False)
    assert logits.shape[-2:] == depth.shape[-2:] == (32 // stride, 32 // stride)
    idx = torch.randint(32 * 32, (3, 300))
    want = full_logits.flatten(2).gather(2, idx[:, None].expand(-1, 90, -1))
    assert torch.allclose(at_pixels(logits, idx, (32, 32)), want, atol=1e-5)
    assert torch.allclose(at_pixels(depth, idx, (32, 32)), full_depth.flatten(2).gather(2, idx[:, None]), atol=1e-6)

    # targets the net half gets right: per-pixel losses vary a lot, so a wrong pixel pairing shows
    seg = full_logits.argmax(1)
    seg[:, 16:] = torch.randint(0, 90, (3, 16, 32))
    seg[0, :4] = VOID_ID
    target_depth = full_depth[:, 0].detach().clone()
    target_depth[:, :, :10] = 1.0
    batch = (x, seg, target_depth, torch.tensor([True, False, True]))
    kw = {"class_weight": class_weights(), "presence_weight": 1.0}
    dense, dense_logs = judge_loss(j, batch, **kw)
    j.zero_grad()
    sampled, logs = judge_loss(j, batch, **kw, points=40_000, gen=torch.Generator().manual_seed(0))
    assert float(sampled.detach()) == pytest.approx(float(dense.detach()), rel=0.03)
    assert logs["ce"] == pytest.approx(dense_logs["ce"], rel=0.03)
    assert logs["depth_l1"] == pytest.approx(dense_logs["depth_l1"], rel=0.03)
    assert dense_logs["depth_l1"] > 0.05 and logs["presence"] == pytest.approx(dense_logs["presence"], rel=0.1)
    sampled.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in j.parameters())


def test_judge_trains_with_sampled_loss_points_in_bf16(tmp_path, capsys):
    cfg = tmp_path / "j.yaml"
    cfg.write_text(f"component: judge\noutput_dir: {tmp_path}/j\nsteps: 2\nbatch_size: 2\nlog_every: 1\n"
                   "mixed_precision: bf16\nextra: {loss_points: 64, presence_weight: 1.0}\n"
                   "model: {channels: [8, 16], groups: 4, stem_stride: 4}\n"
                   "data: {n_scenes: 4, size: 64, holdout_n: 2, holdout_seed: 5}\n")  # fmt: skip
    assert main(["train", "judge", "--config", str(cfg), "--quiet"]) == 0
    rows = (tmp_path / "j" / "loss.csv").read_text().splitlines()
    assert rows[0].split(",")[-3:] == ["ce", "depth_l1", "presence"] and len(rows) == 3
    # then another precision in the same process (accelerate's process-wide state would refuse it)
    args = ["train", "judge", "--config", str(cfg), "--quiet", "--output-dir", str(tmp_path / "fp32"),
            "--set", "mixed_precision=no", "--set", "steps=1"]  # fmt: skip
    assert main(args) == 0
    for bad in ("-1", "2.5", "true"):
        args = ["train", "judge", "--config", str(cfg), "--quiet", "--output-dir", str(tmp_path / "bad"),
                "--set", f"extra.loss_points={bad}"]  # fmt: skip
        assert main(args) == 2
        assert "extra.loss_points must be an integer >= 0" in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


def test_verdict_sheet_lays_out_prompts_and_pads_the_last_row(tmp_path):
    import numpy as np
    from PIL import Image

    from fgdm.eval.runner import FOUND, MISSING, verdict_sheet

    (tmp_path / "images").mkdir()
    rows = []
    for p in range(3):
        for k in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * p + 10 * k, np.uint8)).save(tmp_path / "images" / f"p{p:05d}-{k:02d}.png")
            rows.append({"prompt_index": p, "k": k, "objects": ["dog", "cat"], "present": ["dog"] if k else []})
    sheet = np.asarray(verdict_sheet(tmp_path, rows, tiles_per_row=6))
    assert sheet.shape[1] == 6 * 128  # two prompts of three images a row
    assert sheet[64, 3 * 128 + 64].tolist() == [40, 40, 40]  # prompt 1, image 0 starts the 4th column
    y = 128 + 3 * 14 + 4 + 4  # the second row, below the first row's notes: file stem, dog, cat
    assert sheet[y + 64, 64].tolist() == [80, 80, 80]  # prompt 2, image 0
    assert sheet[y + 64, 3 * 128 + 64].tolist() == [255, 255, 255]  # padding, not a repeated image

    def inks(col: int, bottom: int = y) -> tuple[bool, bool]:  # green / red text under a first-row tile
        px = sheet[128:bottom, col * 128 : (col + 1) * 128].reshape(-1, 3).astype(int)  # (anti-aliased)
        return bool(((px[:, 1] - px[:, 0] > 40) & (px[:, 1] - px[:, 2] > 40)).any()), \
            bool(((px[:, 0] - px[:, 1] > 60) & (px[:, 0] - px[:, 2] > 60)).any())

    assert FOUND[1] > FOUND[0] and MISSING[0] > MISSING[1]
    assert inks(0) == (False, True)  # image 0 of prompt 0: neither object found
    assert inks(1) == (True, True)  # image 1: the dog, not the cat
    # a relation prompt with both objects found: the relation's verdict is a line of its own
    both = [{**r, "present": ["dog", "cat"], "relation": "left", "relation_holds": r["k"] == 0} for r in rows[:2]]
    sheet = np.asarray(verdict_sheet(tmp_path, both, tiles_per_row=6))
    assert inks(0, len(sheet)) == (True, False) and inks(1, len(sheet)) == (True, True)  # relation right / wrong
    with pytest.raises(ValueError, match="no results"):
        verdict_sheet(tmp_path, [])


def test_per_class_chart_puts_each_class_where_its_values_say():
    import numpy as np

    from fgdm.eval.plots import PRECISION, RECALL, per_class_chart

    pc = {"dog": {"precision": 1.0, "recall": 0.0, "support": 3}, "cat": {"precision": 0.5, "recall": 1.0, "support": 2}}
    img = np.asarray(per_class_chart(pc, columns=1, column_width=400))
    def xs(colour):  # the columns of a dot's pixels, per row band (15 px each, dog's F1 0 comes first)
        hit = (img == np.array(colour)).all(-1)
        return [hit[r : r + 15].any(0).nonzero()[0].mean() for r in (img.shape[0] - 40, img.shape[0] - 25)]
    (p_dog, p_cat), (r_dog, r_cat) = xs(PRECISION), xs(RECALL)
    x0, x1 = 150, 380  # the axis of the one column: 0 at x0, 1 at x1
    assert abs(p_dog - x1) <= 4 and abs(r_dog - x0) <= 4 and abs(p_cat - (x0 + x1) / 2) <= 4 and abs(r_cat - x1) <= 4
    pc = {"dog": {"precision": 0.75, "recall": 1.0, "support": 3}}  # the axis starts at 0.7, the lowest tenth
    img = np.asarray(per_class_chart(pc, columns=1, column_width=400))
    hit = (img == np.array(PRECISION)).all(-1)[-25:-10].any(0).nonzero()[0].mean()
    assert abs(hit - (x0 + (0.75 - 0.7) / 0.3 * (x1 - x0))) <= 4
    with pytest.raises(ValueError, match="per_class_chart"):
        per_class_chart({})


def test_bar_chart_draws_bars_to_scale_and_checks_its_input():
    import numpy as np

    from fgdm.eval.plots import BAR, bar_chart

    img = np.asarray(bar_chart(["a", "b", "c"], [100.0, 50.0, 0.0], errors=[0.0, 10.0, 0.0], ymax=100, title="t"))
    blue = (img == np.array(BAR)).all(-1)
    cols = blue.any(0).nonzero()[0]
    heights = [blue[:, c].sum() for c in (cols[0] + 2, cols[-1] - 2)]  # inside the first and the second bar
    assert abs(heights[0] - 2 * heights[1]) <= 2  # 100 is twice as tall as 50
    assert not blue[:, int(img.shape[1] * 0.85) :].any()  # a value of 0 draws no bar
    for bad in ({"labels": ["a"], "values": [1.0, 2.0]}, {"labels": [], "values": []},
                {"labels": ["a"], "values": [-1.0]},
                {"labels": ["a"], "values": [1.0], "errors": [1.0, 2.0]}):  # fmt: skip
        with pytest.raises(ValueError, match="bar_chart"):
            bar_chart(**bad)


def test_real_renders_score_the_benchmark_ceiling(judge_dir, tmp_path, capsys):
    """--real puts a render showing exactly each prompt's objects (and its relation, in the true
    map) where a generated image would be, through the same runner, record and resume."""
    import numpy as np
    from PIL import Image

    from fgdm.eval.metrics import present_categories, relation_holds
    from fgdm.world.categories import category
    from fgdm.world.render import render
    from fgdm.world.scene import WorldConfig, sample_scene

    rel = tmp_path / "rel.json"
    main(["eval", "make-prompts", "--recipe", "relations", "--n", "3", "--out", str(rel)])
    capsys.readouterr()
    out = tmp_path / "real"
    argv = ["eval", "visor", "--prompts", str(rel), "--real", "--judge", str(judge_dir), "--images-per-prompt", "2",
            "--size", "64", "--out", str(out), "--json", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "object_accuracy" in json.loads(capsys.readouterr().out)
    rows = [json.loads(f.read_text()) for f in sorted((out / "results").glob("*.json"))]
    assert len(rows) == 6 and all(r["fits"] and r["tries"] >= 1 for r in rows)
    for r in rows:  # the saved image is the render of the recorded scene, and that scene fits its prompt
        assert r["style"] == "photo" and r["placed"] == r["objects"]
        scene = sample_scene(r["scene_seed"], WorldConfig(styles=("photo",)), objects=r["objects"])
        truth = render(scene, 64)
        assert np.array_equal(np.asarray(Image.open(out / "images" / f"p{r['prompt_index']:05d}-{r['k']:02d}.png")),
                              truth.image)  # fmt: skip
        assert set(r["objects"]) <= present_categories(truth.seg)
        assert relation_holds(truth.seg, r["objects"][0], r["objects"][1], r["relation"])
    record = json.loads((out / "record.json").read_text())
    assert record["settings"]["model"] == "sceneworld renders" and record["settings"]["steps"] is None
    # what a prompt names beyond its objects is drawn too: counts, style, background
    styled = tmp_path / "styled.txt"
    styled.write_text("a pencil sketch of two dogs and a cat on the beach\n")
    assert main(["eval", "recall", "--prompts", str(styled), "--real", "--judge", str(judge_dir), "--size", "64",
                 "--out", str(tmp_path / "styled"), "--json", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    (r,) = [json.loads(f.read_text()) for f in (tmp_path / "styled" / "results").glob("*.json")]
    assert r["fits"] and r["style"] == "pencil sketch" and r["placed"] == ["dog", "dog", "cat"]
    scene = sample_scene(r["scene_seed"], WorldConfig(styles=("pencil sketch",)), objects=r["placed"])
    assert scene.style == "pencil sketch" and (render(scene, 64).seg == category("sand").id).mean() >= 0.003
    assert main([*argv, "--resume"]) == 0  # finished: nothing redrawn
    capsys.readouterr()
    assert main(["eval", "recall", "--prompts", str(rel), "--real", "--model", "x", "--out", str(tmp_path / "m")]) == 2
    assert "--real scores world renders" in capsys.readouterr().err
    assert main(["eval", "recall", "--prompts", str(rel), "--real", "--size", "60", "--out", str(tmp_path / "s")]) == 2
    assert "--size must be a multiple of 8" in capsys.readouterr().err


def test_images_from_an_earlier_run_are_judged_and_scored_again(tiny_sd_dir, judge_dir, tiny_judge_dir,
                                                                 tiny_clip_dir, tmp_path, capsys):  # fmt: skip
    """--images-from RUN reads RUN's images instead of drawing them: with the same judge the verdicts
    are RUN's, with another judge the images are still RUN's; quality scores them the same way; and
    only images of the same prompts and seed are taken."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat\na photo of a bus\n")
    src = tmp_path / "src"
    base = ["eval", "recall", "--prompts", str(prompts), "--images-per-prompt", "2", "--json", "--quiet"]
    assert main([*base, "--model", str(tiny_sd_dir), "--judge", str(judge_dir), "--steps", "2", "--out", str(src)]) == 0
    first = json.loads(capsys.readouterr().out)
    same = tmp_path / "same"
    assert main([*base, "--images-from", str(src), "--judge", str(judge_dir), "--out", str(same)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == first  # the same images, the same judge: every figure, the drawing time included
    other = tmp_path / "other"
    assert main([*base, "--images-from", str(src), "--judge", str(tiny_judge_dir), "--out", str(other)]) == 0
    capsys.readouterr()
    for f in sorted((src / "images").glob("*.png")):
        assert (other / "images" / f.name).read_bytes() == f.read_bytes()
    rec = json.loads((other / "record.json").read_text())["settings"]
    assert rec["images_from"] == str(src.resolve()) and rec["model_fingerprint"] == json.loads(
        (src / "record.json").read_text())["settings"]["model_fingerprint"]

    q = ["eval", "quality", "--prompts", str(prompts), "--clip", str(tiny_clip_dir), "--images-per-prompt", "2",
         "--n-real", "4", "--json", "--quiet"]  # fmt: skip
    assert main([*q, "--model", str(tiny_sd_dir), "--steps", "2", "--out", str(tmp_path / "q1")]) == 0
    q1 = json.loads(capsys.readouterr().out)
    assert main([*q, "--images-from", str(tmp_path / "q1"), "--out", str(tmp_path / "q2")]) == 0
    assert json.loads(capsys.readouterr().out) == q1

    other_prompts = tmp_path / "o.txt"
    other_prompts.write_text("a photo of a bus\na dog and a cat\n")
    for argv, needle in [
        ([*base, "--images-from", str(src), "--seed", "1"], "with seed 0, not 1"),
        ([*base[:-4], "--images-per-prompt", "3", "--images-from", str(src)], "2 prompts x 2 images; 2 x 3 asked"),
        (["eval", "recall", "--prompts", str(other_prompts), "--images-from", str(src)], "use the same prompt file"),
        ([*base, "--images-from", str(src), "--model", str(tiny_sd_dir)], "drop --model/--real"),
        ([*base, "--images-from", str(tmp_path / "nothing")], "not a benchmark run folder"),
        ([*base, "--images-from", str(src), "--size", "64"], "holds 32-px images, --size 64 asked"),
    ]:
        assert main([*argv, "--judge", str(judge_dir), "--out", str(tmp_path / "bad")]) == 2, needle
        assert needle in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()  # refused before any run folder was started
    from fgdm.eval.prompts import load_prompt_entries
    from fgdm.eval.runner import SavedImages

    saved = SavedImages(src, load_prompt_entries(prompts), images_per_prompt=2, seed=0)
    assert saved(["a photo of a bus"], seed=[1001]).images[0].size == (32, 32)
    with pytest.raises(ValueError, match="no image of 'a photo of a bus' with seed 2"):
        saved(["a photo of a bus"], seed=[2])  # an image it was not opened for: a clear error, not a KeyError

import json

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


def test_bad_judge_paths(tmp_path):
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        load_judge(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="could not be loaded"):
        Judge.from_pretrained(tmp_path)


def test_eval_judge_cli(judge_dir, capsys):
    assert main(["eval", "judge", "--judge", str(judge_dir), "--n", "4", "--seed", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert 0 <= r["presence_f1"] <= 1 and 0 <= r["miou"] <= 1 and "per_class" not in r


def test_benchmark_runners_resume_and_score(tiny_sd_dir, judge_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog and a cat\na photo of a bus\n")
    out = tmp_path / "run"
    argv = ["eval", "recall", "--prompts", str(prompts), "--model", str(tiny_sd_dir), "--judge", str(judge_dir),
            "--images-per-prompt", "2", "--steps", "2", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"mean_recall", "all_present_rate"} <= set(r) and r["n"] == 4
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

    rel = tmp_path / "rel.json"
    main(["eval", "make-prompts", "--recipe", "relations", "--n", "2", "--out", str(rel)])
    capsys.readouterr()
    assert main(["eval", "visor", "--prompts", str(rel), "--model", str(tiny_sd_dir), "--judge", str(judge_dir),
                 "--steps", "2", "--out", str(tmp_path / "v"), "--json"]) == 0  # fmt: skip
    assert "object_accuracy" in json.loads(capsys.readouterr().out)
    assert main(["eval", "visor", "--prompts", str(prompts), "--model", str(tiny_sd_dir), "--judge", str(judge_dir),
                 "--steps", "2", "--out", str(tmp_path / "v2")]) == 2  # fmt: skip
    assert "relation prompts" in capsys.readouterr().err

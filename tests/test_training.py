import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from fgdm.cli import main
from fgdm.pipelines import Text2ImagePipeline
from fgdm.training.config import load_train_config

COMMON = """
steps: {steps}
batch_size: 4
log_every: 1
checkpoint_every: 2
seed: 0
data: {{n_scenes: 8, size: 64, holdout_n: 3, holdout_seed: 99}}
optim: {{lr: 1.0e-3, warmup_steps: 1}}
"""


def _cfg(tmp_path, name, body, steps=2):
    p = tmp_path / f"{name}.yaml"
    p.write_text(body + COMMON.format(steps=steps))
    return str(p)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train every MiniSD component for a few CPU steps, through the CLI."""
    tmp = tmp_path_factory.mktemp("train")
    out = {}
    tok = _cfg(tmp, "tok", f"component: tokenizer\noutput_dir: {tmp}/tok\nmodel: {{vocab_size: 700}}\n")
    assert main(["train", "tokenizer", "--config", tok, "--quiet"]) == 0
    out["tokenizer"] = tmp / "tok" / "final"
    vae = _cfg(tmp, "vae", f"component: vae\noutput_dir: {tmp}/vae\nema_decay: 0.9\n"
               "model: {block_out_channels: [8, 8, 8], norm_num_groups: 4}\n")  # fmt: skip
    assert main(["train", "vae", "--config", vae, "--quiet"]) == 0
    out["vae"] = tmp / "vae" / "final"
    clip = _cfg(tmp, "clip", f"component: clip\noutput_dir: {tmp}/clip\nbase: {{tokenizer: {out['tokenizer']}}}\n"
                "model: {text: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1}, "
                "vision: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, patch_size: 8}, projection_dim: 16}\n")  # fmt: skip
    assert main(["train", "clip", "--config", clip, "--quiet"]) == 0
    out["clip"] = tmp / "clip" / "final"
    unet = _cfg(tmp, "unet", f"component: unet\noutput_dir: {tmp}/unet\nema_decay: 0.9\n"
                f"base: {{tokenizer: {out['tokenizer']}, text_encoder: {out['clip']}, vae: {out['vae']}}}\n"
                "model: {block_out_channels: [16, 32], down_block_types: [CrossAttnDownBlock2D, DownBlock2D], "
                "up_block_types: [UpBlock2D, CrossAttnUpBlock2D], attention_head_dim: 4, norm_num_groups: 8}\n", steps=3)  # fmt: skip
    assert main(["train", "unet", "--config", unet, "--quiet"]) == 0
    out["unet"] = tmp / "unet" / "final"
    out["unet_cfg"] = unet
    out["root"] = tmp
    return out


def test_tokenizer_metrics(trained):
    m = json.loads((trained["tokenizer"].parent / "metrics.json").read_text())
    assert m["holdout_unknown_tokens"] == 0 and m["vocab_size"] >= 600
    assert (trained["tokenizer"] / "vocab.json").exists() and (trained["tokenizer"] / "merges.txt").exists()


def test_vae_metrics_and_scaling(trained):
    m = json.loads((trained["vae"].parent / "metrics.json").read_text())
    assert set(m["psnr_db"]) == {"image", "seg", "depth", "normal", "sketch"}
    assert 0 <= m["seg_palette_accuracy"] <= 1 and m["scaling_factor"] > 0
    cfg = json.loads((trained["vae"] / "config.json").read_text())
    assert cfg["scaling_factor"] == m["scaling_factor"]


def test_clip_zero_shot_is_measured(trained):
    m = json.loads((trained["clip"].parent / "metrics.json").read_text())
    assert 0 <= m["zero_shot_accuracy"] <= 1 and m["classes"] == 80


def test_loss_curve_and_checkpoints(trained):
    rows = list(csv.reader((trained["unet"].parent / "loss.csv").open()))
    assert rows[0][:2] == ["step", "loss"] and [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    ckpts = sorted((trained["unet"].parent / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-0000002", "step-0000003"]
    assert all(f.suffix in (".safetensors", ".json") for c in ckpts for f in c.iterdir())


def test_resume_continues_and_refuses_to_clobber(trained, capsys):
    cfg = trained["unet_cfg"]
    assert main(["train", "unet", "--config", cfg, "--quiet"]) == 2  # checkpoints exist, no --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "unet", "--config", cfg, "--quiet", "--resume", "--steps", "5"]) == 0
    rows = list(csv.reader((trained["unet"].parent / "loss.csv").open()))
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4, 5]


def test_max_minutes_stops_cleanly_with_a_checkpoint(trained, tmp_path, capsys):
    """A run whose wall-clock budget is spent stops after the step in progress, checkpoints it and
    says so; --resume goes on from there."""
    cfg, out = trained["unet_cfg"], tmp_path / "budget"
    args = ["train", "unet", "--config", cfg, "--quiet", "--output-dir", str(out), "--steps", "50"]
    assert main([*args, "--max-minutes", "0.00001"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["stopped_early"] is True and m["steps"] == 1
    assert [c.name for c in (out / "checkpoints").glob("step-*")] == ["step-0000001"]
    assert (out / "final").is_dir()  # the newest weights are usable (e.g. to assemble a preview)
    assert main([*args, "--resume", "--steps", "2", "--set", "optim.rewarm_steps=4"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["stopped_early"] is False and m["steps"] == 2
    rows = list(csv.DictReader((out / "loss.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2"]
    assert float(rows[1]["lr"]) == pytest.approx(1e-3 * 1 / 4)  # the resumed run re-warms over 4 steps (1st of them)
    state = json.loads((out / "checkpoints" / "step-0000002" / "state.json").read_text())
    assert [h["steps"] for h in state["history"]] == [[0, 1], [1, 2]]  # how the checkpoint was made, run by run
    assert state["history"][1]["data"] == {"n_scenes": 8, "seed": 0, "size": 64} and state["history"][1]["batch_size"] == 4
    moved = tmp_path / "moved"  # a checkpoint copied into a new folder resumes there, its curve with a header
    shutil.copytree(out / "checkpoints", moved / "checkpoints")
    assert main(["train", "unet", "--config", cfg, "--quiet", "--output-dir", str(moved), "--steps", "3", "--resume"]) == 0
    assert [r["step"] for r in csv.DictReader((moved / "loss.csv").open())] == ["3"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*args, "--max-minutes", "0"])
    assert e.value.code == 2 and "--max-minutes" in capsys.readouterr().err


def test_cosine_schedule_follows_the_global_step_across_resumes(trained, tmp_path):
    """optim.schedule=cosine decays over the run's total steps; a run cut by --max-minutes and resumed
    logs the same learning rates as an uninterrupted one (warm-up 1 step, re-warm 1 step)."""
    base = ["train", "unet", "--config", trained["unet_cfg"], "--quiet", "--steps", "4",
            "--set", "optim.schedule=cosine", "--set", "optim.min_lr_ratio=0.1", "--set", "optim.rewarm_steps=1"]  # fmt: skip
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*base, "--output-dir", str(whole)]) == 0
    assert main([*base, "--output-dir", str(cut), "--max-minutes", "0.00001"]) == 0
    assert main([*base, "--output-dir", str(cut), "--resume"]) == 0
    lrs = [[float(r["lr"]) for r in csv.DictReader((d / "loss.csv").open())] for d in (whole, cut)]
    want = [1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 4))) for s in range(4)]
    assert lrs[0] == pytest.approx(want) and lrs[1] == pytest.approx(want)
    assert lrs[0][0] == pytest.approx(1e-3) and lrs[0][-1] < 0.3e-3


def test_decay_start_holds_the_rate_then_cools_down_on_resume(trained, tmp_path):
    """optim.decay_start: a constant-rate run, resumed with a cosine tail over [decay_start, steps]
    (warmup-stable-decay), keeps the rate up to decay_start and decays after it, on the global step."""
    base = ["train", "unet", "--config", trained["unet_cfg"], "--quiet", "--set", "optim.rewarm_steps=1"]
    out = tmp_path / "wsd"
    assert main([*base, "--steps", "2", "--output-dir", str(out)]) == 0  # the constant-rate run
    assert main([*base, "--steps", "6", "--output-dir", str(out), "--resume", "--set", "optim.schedule=cosine",
                 "--set", "optim.decay_start=3", "--set", "optim.min_lr_ratio=0.1"]) == 0  # fmt: skip
    lrs = [float(r["lr"]) for r in csv.DictReader((out / "loss.csv").open())]
    want = [1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * max(0, s - 3) / 3))) for s in range(6)]
    assert lrs == pytest.approx(want)
    assert lrs[:4] == pytest.approx([1e-3] * 4) and lrs[5] == pytest.approx(0.325e-3)
    history = json.loads((out / "checkpoints" / "step-0000006" / "state.json").read_text())["history"]
    assert "schedule" not in history[0] and history[0]["lr_at_end"] == pytest.approx(1e-3)  # how each run ran
    assert history[1]["schedule"] == {"schedule": "cosine", "decay_start": 3, "min_lr_ratio": 0.1, "steps": 6}
    assert history[1]["lr_at_end"] == pytest.approx(0.325e-3)


def test_a_checkpoint_slimmed_to_its_ema_resumes_from_the_ema(tmp_path):
    """Committed checkpoints may keep only their EMA shards (the weights budget): the model then starts
    from the EMA; a checkpoint with neither is a clear error."""
    from fgdm.training.checkpoint import load_checkpoint, save_checkpoint
    from fgdm.training.loop import EMA

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)  # the model moves away from its EMA
    ck = save_checkpoint(tmp_path, 7, model, ema, {"component": "x"})
    for f in ck.glob("model-*.safetensors"):
        f.unlink()
    fresh, fresh_ema = torch.nn.Linear(3, 2), EMA(torch.nn.Linear(3, 2), 0.5)
    assert load_checkpoint(ck, fresh, fresh_ema) == 7
    want = ema.state_dict()["weight"].to(torch.bfloat16).float()  # EMA shards are bf16
    assert torch.equal(fresh.weight.detach(), want) and torch.equal(fresh_ema.state_dict()["weight"], want)
    assert not torch.allclose(fresh.weight, model.weight)
    for f in ck.glob("ema-*.safetensors"):
        f.unlink()
    with pytest.raises(ValueError, match="neither model nor ema"):
        load_checkpoint(ck, fresh, fresh_ema)


@pytest.mark.parametrize("setting", ["optim.schedule=linear", "optim.min_lr_ratio=1.5", "optim.min_lr_ratio=true",
                                     "extra.min_snr_gama=5", "optim.lr=0", "optim.lr=fast", "optim.weight_decay=-1",
                                     "optim.warmup_steps=2.5", "optim.grad_clip=none", "optim.decay_start=-1",
                                     "optim.decay_start=1", "optim.decay_start=1000000"])
def test_bad_optim_and_extra_settings_are_clear_errors(trained, tmp_path, capsys, setting):
    args = ["train", "unet", "--config", trained["unet_cfg"], "--quiet", "--output-dir", str(tmp_path / "x"), "--set", setting]
    assert main(args) == 2
    assert setting.split("=")[0].split(".")[1] in capsys.readouterr().err  # the setting is named
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_factor_extra_keys_are_checked_with_the_others():
    from fgdm.training.config import TrainConfig

    with pytest.raises(ValueError, match=r"unknown keys \['distil_weight'\] in extra for factor"):
        TrainConfig(component="factor", output_dir="x", extra={"variable": "seg", "distil_weight": 1.0})
    assert TrainConfig(component="image-factor", output_dir="x", extra={"null_prob": 0.2}).extra == {"null_prob": 0.2}


def test_assemble_and_generate(trained, tmp_path):
    out = tmp_path / "minisd"
    assert main(["train", "assemble", "--tokenizer", str(trained["tokenizer"]), "--text-encoder", str(trained["clip"]),
                 "--vae", str(trained["vae"]), "--unet", str(trained["unet"]), "--out", str(out)]) == 0  # fmt: skip
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert pipe.unet.config.sample_size == 16
    with safe_open(str(out / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 (safe_open is not iterable)
    res = Text2ImagePipeline.from_pretrained(out)("a photo of a dog", num_inference_steps=2)
    assert res.images[0].size == (64, 64)


def test_unet_starts_from_a_pipelines_unet(trained, tmp_path, capsys):
    """base.unet: training starts from a trained UNet (here an assembled fp16 pipeline's; every base
    part may name the pipeline folder); an architecture or latent size that does not fit is a clear error."""
    from safetensors.torch import load_file

    pipe = tmp_path / "minisd"
    assert main(["train", "assemble", "--tokenizer", str(trained["tokenizer"]), "--text-encoder", str(trained["clip"]),
                 "--vae", str(trained["vae"]), "--unet", str(trained["unet"]), "--out", str(pipe)]) == 0  # fmt: skip
    start = {k: v.float() for k, v in load_file(str(pipe / "unet" / "diffusion_pytorch_model.safetensors")).items()}
    run = ["train", "unet", "--config", trained["unet_cfg"], "--quiet", "--steps", "1", "--set", "optim.lr=1e-9"]
    parts = [f"base.{k}={pipe}" for k in ("tokenizer", "text_encoder", "vae", "unet")]

    def final(out):
        return load_file(str(next((out / "final").glob("*.safetensors"))))

    assert main([*run, "--output-dir", str(tmp_path / "a"), *(x for kv in parts for x in ("--set", kv))]) == 0
    got = final(tmp_path / "a")
    assert max((got[k] - start[k]).abs().max().item() for k in start) < 1e-6  # one step at lr 1e-9: the start itself
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["started_from"] == str(pipe / "unet")
    hist = json.loads(next((tmp_path / "a" / "checkpoints").glob("step-*/state.json")).read_text())["history"]
    assert hist[0] == {"started_from": str(pipe / "unet")} and len(hist) == 2  # a saved UNet has no history
    resumed = [*run[:-4], "--steps", "2", "--set", "optim.lr=1e-9", "--output-dir", str(tmp_path / "a"), "--resume",
               "--set", f"base.unet={pipe}"]  # fmt: skip
    assert main(resumed) == 0  # goes on from its checkpoint; base.unet is not loaded again
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["started_from"] is None
    assert main([*run, "--output-dir", str(tmp_path / "b")]) == 0  # from scratch: far from it
    assert max((final(tmp_path / "b")[k] - start[k]).abs().max().item() for k in start) > 1e-4
    wider = ["--set", "model.block_out_channels=[16, 48]"]
    assert main([*run, "--output-dir", str(tmp_path / "c"), "--set", f"base.unet={pipe}", *wider]) == 2
    assert "does not fit the UNet that model: describes" in capsys.readouterr().err
    assert main([*run, "--output-dir", str(tmp_path / "d"), "--set", f"base.unet={pipe}", "--set", "data.size=128"]) == 2
    assert "works on 16-px latents, this run on 32" in capsys.readouterr().err
    committed = tmp_path / "committed"  # a checkpoint alone, as in checkpoints/unet: this run's model: reads it
    shutil.copytree(sorted((trained["unet"].parent / "checkpoints").glob("step-*"))[-1], committed)
    ema = {k: v.float() for k, v in load_file(str(next(committed.glob("ema-*.safetensors")))).items()}
    assert main([*run, "--output-dir", str(tmp_path / "e"), "--set", f"base.unet={committed}"]) == 0
    assert max((final(tmp_path / "e")[k] - ema[k]).abs().max().item() for k in ema) < 1e-6
    start_state = json.loads((committed / "state.json").read_text())  # its provenance heads the new run's
    hist = json.loads(next((tmp_path / "e" / "checkpoints").glob("step-*/state.json")).read_text())["history"]
    assert hist[: len(start_state["history"])] == start_state["history"]
    assert hist[-2]["started_from"] == str(committed) and hist[-2]["at_step"] == start_state["step"]
    assert hist[-1]["steps"] == [0, 1]
    assert main([*run, "--output-dir", str(tmp_path / "f"), "--set", f"base.unet={committed}", *wider]) == 2
    assert "does not fit the UNet its config describes" in capsys.readouterr().err
    (committed / "state.json").write_text(json.dumps({"step": 3, "history": 7}))  # a history that is not a list
    assert main([*run, "--output-dir", str(tmp_path / "g"), "--set", f"base.unet={committed}"]) == 2
    assert "its state.json cannot be read" in capsys.readouterr().err


def test_assemble_from_a_training_checkpoint(trained, tmp_path, capsys):
    """--unet may be a training checkpoint: its EMA weights go into the pipeline, its architecture
    from the run's config.json beside it or from --unet-config; a mismatch is a clear error."""
    from safetensors.torch import load_file

    ckpt = sorted((trained["unet"].parent / "checkpoints").glob("step-*"))[-1]
    parts = ["train", "assemble", "--tokenizer", str(trained["tokenizer"]), "--text-encoder", str(trained["clip"]),
             "--vae", str(trained["vae"])]  # fmt: skip
    assert main([*parts, "--unet", str(ckpt), "--out", str(tmp_path / "a")]) == 0
    ema = {k: v.half() for k, v in load_file(str(next(ckpt.glob("ema-*.safetensors")))).items()}
    got = load_file(str(tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert got.keys() == ema.keys() and all(torch.equal(got[k], ema[k]) for k in ema)
    moved = tmp_path / "copied"  # e.g. checkpoints/unet: no run folder around it
    shutil.copytree(ckpt, moved)
    assert main([*parts, "--unet", str(moved), "--out", str(tmp_path / "b")]) == 2
    assert "--unet-config" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main([*parts, "--unet", str(moved), "--unet-config", trained["unet_cfg"], "--out", str(tmp_path / "b")]) == 0
    got_b = load_file(str(tmp_path / "b" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(got_b[k], ema[k]) for k in ema)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(Path(trained["unet_cfg"]).read_text().replace("[16, 32]", "[8, 32]"))
    assert main([*parts, "--unet", str(moved), "--unet-config", str(wrong), "--out", str(tmp_path / "c")]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert main([*parts, "--unet", str(moved), "--unet-config", trained["unet_cfg"].replace("unet.yaml", "vae.yaml"),
                 "--out", str(tmp_path / "c")]) == 2  # fmt: skip
    assert "not a UNet one" in capsys.readouterr().err
    assert main([*parts, "--unet", str(trained["unet"]), "--unet-config", trained["unet_cfg"], "--out",
                 str(tmp_path / "d")]) == 2  # a saved UNet has its own architecture  # fmt: skip
    assert "not a training checkpoint" in capsys.readouterr().err
    broken = tmp_path / "run"  # a run folder whose config.json is not JSON
    shutil.copytree(ckpt, broken / "checkpoints" / ckpt.name)
    (broken / "config.json").write_text("{not json")
    assert main([*parts, "--unet", str(broken / "checkpoints" / ckpt.name), "--out", str(tmp_path / "e")]) == 2
    assert "cannot be used" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_config_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("component: vae\noutput_dir: x\nstepz: 3\n")
    with pytest.raises(ValueError, match="stepz"):
        load_train_config(p)
    p.write_text("component: painter\noutput_dir: x\n")
    with pytest.raises(ValueError, match="painter"):
        load_train_config(p)
    p.write_text("component: vae\noutput_dir: x\nmixed_precision: fp8\n")
    with pytest.raises(ValueError, match="mixed_precision"):
        load_train_config(p)
    p.write_text("component: vae\noutput_dir: x\nmax_minutes: -1\n")
    with pytest.raises(ValueError, match="max_minutes"):
        load_train_config(p)
    assert main(["train", "vae", "--config", str(tmp_path / "none.yaml")]) == 2


def test_unet_prerender_is_cached(trained):
    cache = trained["unet"].parent / "prerender.safetensors"
    assert cache.exists()
    from safetensors import safe_open

    with safe_open(str(cache), "pt") as f:
        assert f.get_slice("lat_image").get_shape()[0] == 8  # n_scenes
        assert "vae" in f.metadata()["key"]


@pytest.mark.parametrize("name", ["tokenizer", "clip", "vae", "unet", "judge"])
def test_shipped_configs_load(name):
    from pathlib import Path

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    assert cfg.component == name


def test_shipped_factor_configs_make_one_valid_graph():
    from pathlib import Path

    from fgdm.models.factors import GraphSpec
    from fgdm.training.factors import factor_spec

    root = Path(__file__).resolve().parents[1] / "configs"
    specs = {}
    for name in ("factor_seg", "factor_depth", "factor_sketch", "image_factor", "factor_normal", "factor_seg_nodistill"):
        cfg = load_train_config(root / f"{name}.yaml")
        spec = factor_spec(cfg)
        if name.endswith("nodistill"):
            assert cfg.extra["distill_weight"] == 0 and cfg.extra["graph"] != "runs/train/graph"
            continue
        assert cfg.extra["graph"] == "runs/train/graph"
        specs[spec.name] = spec.to_dict()
    g = GraphSpec.from_dict({"factors": specs})
    assert g.first_factors() == ["seg"] and g.factors["image"].kind == "controlnet"


def test_missing_base_components_are_clear_errors(tmp_path, capsys):
    cfg = _cfg(tmp_path, "u", f"component: clip\noutput_dir: {tmp_path}/c\nbase: {{tokenizer: {tmp_path}/nothing}}\n")
    assert main(["train", "clip", "--config", cfg, "--quiet"]) == 2
    assert f"base.tokenizer {str(tmp_path / 'nothing')!r} does not exist" in capsys.readouterr().err
    assert main(["train", "assemble", "--tokenizer", str(tmp_path / "no"), "--text-encoder", str(tmp_path / "no"),
                 "--vae", str(tmp_path / "no"), "--unet", str(tmp_path / "no"), "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_tokenizer_is_never_overwritten(trained, capsys):
    cfg = _cfg(trained["root"], "tok2", f"component: tokenizer\noutput_dir: {trained['tokenizer'].parent}\n")
    before = (trained["tokenizer"] / "vocab.json").read_text()
    assert main(["train", "tokenizer", "--config", cfg, "--quiet"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert (trained["tokenizer"] / "vocab.json").read_text() == before


def test_tokenizer_training_is_deterministic_across_processes():
    """The same captions give the same tokenizer in any process (the `tokenizers` trainer did not)."""
    import subprocess
    import sys

    code = ("import hashlib, json; from fgdm.models.tiny import _captions; from fgdm.models.tokenizer import train_bpe; "
            "v, m = train_bpe(_captions(60), vocab_size=700); "
            "print(hashlib.sha256((json.dumps(v, sort_keys=True) + '|'.join(m)).encode()).hexdigest())")  # fmt: skip
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(runs) == 1


def test_set_overrides_any_config_value(tmp_path):
    from fgdm.training.config import apply_settings

    d = apply_settings({"data": {"size": 128, "seed": 0}}, ["data.size=64", "extra.sizes=[64, 128]", "ema_decay=0.99",
                                                           "mixed_precision=no"])  # fmt: skip
    assert d == {"data": {"size": 64, "seed": 0}, "extra": {"sizes": [64, 128]}, "ema_decay": 0.99, "mixed_precision": "no"}
    p = tmp_path / "c.yaml"
    p.write_text("component: vae\noutput_dir: x\ndata: {size: 128}\n")
    assert load_train_config(p, settings=["data.size=64"]).data.size == 64
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_train_config(p, settings=["data.size"])
    with pytest.raises(ValueError, match="unknown keys"):
        load_train_config(p, settings=["data.colour=1"])
    # YAML 1.2 floats: 1e-4 is a number (PyYAML's YAML 1.1 would read the string "1e-4", which AdamW rejects)
    assert apply_settings({}, ["optim.lr=1e-4", "x=1.5e3", "y=1.2.3"]) == {"optim": {"lr": 1e-4}, "x": 1500.0, "y": "1.2.3"}
    p.write_text("component: vae\noutput_dir: x\noptim: {lr: 2e-4, weight_decay: 1E-2}\n")
    cfg = load_train_config(p)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (2e-4, 1e-2)


def test_render_pool_matches_the_dataset_in_any_number_of_processes():
    import numpy as np

    from fgdm.training.pools import render_pool
    from fgdm.world.dataset import make_sample

    fields = ("image", "seg", "depth", "caption", "cond_seg", "cond_sketch")
    one = render_pool(3, seed=5, size=64, fields=fields)
    two = render_pool(3, seed=5, size=64, workers=2, fields=fields)
    assert one["caption"] == two["caption"]
    assert all(torch.equal(one[f], two[f]) for f in fields if f != "caption")
    s = make_sample(2, seed=5, size=64)
    assert one["caption"][2] == s.caption.text
    assert one["image"].shape == (3, 3, 64, 64) and one["image"].dtype == torch.uint8
    assert np.array_equal(one["image"][2].permute(1, 2, 0).numpy(), s.render.image)
    assert np.array_equal(one["seg"][2].numpy(), s.render.seg)
    assert np.array_equal(one["cond_sketch"][2].permute(1, 2, 0).numpy(), s.render.conditions()["sketch"])
    with pytest.raises(ValueError, match="cond_heat"):
        render_pool(2, seed=0, size=64, fields=("image", "cond_heat"))


def test_every_shipped_training_config_is_valid():
    """The GPU recipes in configs/ parse and validate (a typo there would cost device minutes)."""
    import yaml

    from fgdm.training.components import TRAINERS

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"
    seen = 0
    for path in sorted(root.glob("*.yaml")):
        if "component" not in (yaml.safe_load(path.read_text()) or {}):
            continue  # e.g. world.yaml, a WorldConfig
        cfg = load_train_config(path)
        assert cfg.component in TRAINERS, path.name
        seen += 1
    assert seen >= 12


def test_bench_train_times_every_variant(tmp_path, capsys):
    cfg = tmp_path / "u.yaml"
    cfg.write_text("component: unet\noutput_dir: x\nbatch_size: 2\ndata: {size: 64}\n"
                   "model: {block_out_channels: [16, 32], down_block_types: [CrossAttnDownBlock2D, DownBlock2D], "
                   "up_block_types: [UpBlock2D, CrossAttnUpBlock2D], attention_head_dim: 4, norm_num_groups: 8}\n")  # fmt: skip
    assert main(["bench", "train", "--config", str(cfg), "--steps", "1", "--warmup", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["batch"] == 2 and r["latent"] == 16 and r["parameters"] > 0
    assert [v["variant"] for v in r["variants"]] == ["fp32 eager", "bf16 eager"]
    assert all(v["ms_per_step"] > 0 and v["samples_per_s"] > 0 for v in r["variants"])
    assert r["variants"][0]["speedup"] == 1.0
    judge = tmp_path / "j.yaml"
    judge.write_text("component: judge\noutput_dir: x\nbatch_size: 2\ndata: {size: 64}\nextra: {loss_points: 100}\n"
                     "model: {channels: [8, 16], groups: 4, stem_stride: 4}\n")  # fmt: skip
    assert main(["bench", "train", "--config", str(judge), "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("judge: ") and "64 px" in out
    for variant in ("fp32 dense loss", "fp32 100 points", "bf16 dense loss", "bf16 100 points"):
        assert variant in out
    bad = tmp_path / "v.yaml"
    bad.write_text("component: vae\noutput_dir: x\n")
    assert main(["bench", "train", "--config", str(bad)]) == 2
    assert "UNet and judge" in capsys.readouterr().err


def test_cpu_and_gpu_recipes_train_one_unet_and_one_base(restored_graph):
    """configs/*_cpu.yaml train the architectures of the GPU recipes, so either machine resumes the
    other's UNet checkpoints, and a base (VAE, MiniCLIP) trained on one serves the UNet of the other."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("unet", "vae", "clip"):
        gpu, cpu = load_train_config(root / f"{name}.yaml"), load_train_config(root / f"{name}_cpu.yaml")
        assert cpu.model == gpu.model and cpu.output_dir == gpu.output_dir and cpu.base == gpu.base, name
        assert cpu.data.size == gpu.data.size and cpu.data.holdout_seed == gpu.data.holdout_seed, name
    # the CPU seg factor is the GPU recipe's module on the same sizes, in a graph of its own
    gpu, cpu = load_train_config(root / "factor_seg.yaml"), load_train_config(root / "factor_seg_cpu.yaml")
    assert cpu.model == gpu.model and cpu.extra["sizes"] == gpu.extra["sizes"] and cpu.extra["variable"] == "seg"
    assert cpu.extra["graph"] != gpu.extra["graph"] and cpu.output_dir != gpu.output_dir
    # its text-conditioned arm differs only in the module's text path, its start (the shipped seg) and precision
    text = load_train_config(root / "factor_seg_text_cpu.yaml")
    assert text.model == {**cpu.model, "text_conditioned": True} and text.mixed_precision == "no"
    assert {k: v for k, v in text.extra.items() if k not in ("graph", "init_from")} == {
        k: v for k, v in cpu.extra.items() if k != "graph"}  # fmt: skip
    assert text.extra["init_from"] == "runs/shipped/fgdm-ce32bb0/seg" and text.extra["graph"] != cpu.extra["graph"]
    seg = json.loads((restored_graph("ce32bb0") / "seg" / "config.json").read_text())  # the seg adapter shipped then
    assert seg["_class_name"] == "FactorAdapter" and not seg.get("text_dim")  # plain: no text path
    assert dataclasses.replace(text, model=cpu.model, extra=cpu.extra, output_dir=cpu.output_dir,
                               mixed_precision=cpu.mixed_precision) == cpu  # fmt: skip
    # the joint recipe (TEXT=1 in scripts/device_stage.sh) is the GPU one with the encoder training, in its own folder
    gpu, joint = load_train_config(root / "unet.yaml"), load_train_config(root / "unet_text.yaml")
    assert joint.extra == {**gpu.extra, "train_text_encoder": True} and joint.output_dir != gpu.output_dir
    same = dataclasses.replace(joint, extra=gpu.extra, output_dir=gpu.output_dir)
    assert same == gpu


def test_the_from_scratch_seg_recipe_builds_on_the_shipped_base():
    """configs/factor_seg_scratch_cpu.yaml: the paper's from-scratch variant for seg, trained and sampled
    at SBPC's quarter-area size only, a UNet reading the shipped MiniSD's caption embeddings."""
    from diffusers import UNet2DConditionModel

    from fgdm.models.factors import build_factor_module, check_factor_module
    from fgdm.models.pipeline import default_model_dir
    from fgdm.training.factors import factor_spec

    root = Path(__file__).resolve().parents[1]
    cfg = load_train_config(root / "configs" / "factor_seg_scratch_cpu.yaml")
    spec = factor_spec(cfg)
    assert (spec.name, spec.kind, spec.parents) == ("seg", "scratch", ())
    assert cfg.extra["sizes"] == [cfg.data.size] == [spec.size] == [64]
    assert cfg.optim.schedule == "cosine" and cfg.extra["graph"] != "runs/train/graph_cpu"
    base_dir = default_model_dir()
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base_dir / "unet"))
    text_width = json.loads((base_dir / "text_encoder" / "config.json").read_text())["hidden_size"]
    module = build_factor_module(spec, unet, cfg.model)
    check_factor_module(spec, module, unet, text_width)
    assert list(module.config.block_out_channels) == cfg.model["block_out_channels"]
    assert module.config.in_channels == 4 and module.config.cross_attention_dim == text_width
    # the shipped graph's seg factor is this recipe's module
    from fgdm.models.factors import default_graph_dir

    shipped = json.loads((default_graph_dir() / "seg" / "config.json").read_text())
    assert shipped["block_out_channels"] == cfg.model["block_out_channels"] and shipped["in_channels"] == 4
    # configs/factor_seg_dense_cpu.yaml trains that shipped factor on, on denser scenes, into a graph of its own
    dense = load_train_config(root / "configs" / "factor_seg_dense_cpu.yaml")
    assert dense.model == cfg.model and factor_spec(dense) == dataclasses.replace(spec, guidance=4.0)  # the graph's since
    assert dense.extra["init_from"] == "src/fgdm/models/data/fgdm/seg" and dense.data.seed != cfg.data.seed
    assert dense.data.world["max_objects"] == 8 and dense.extra["graph"] not in (cfg.extra["graph"], "src/fgdm/models/data/fgdm")


def test_eval_vae_reproduces_the_trainers_metrics_and_draws_a_sheet(trained, tmp_path, capsys):
    want = json.loads((trained["vae"].parent / "metrics.json").read_text())
    sheet = tmp_path / "vae.png"
    args = ["eval", "vae", "--vae", str(trained["vae"]), "--n", "3", "--seed", "99", "--size", "64", "--json"]
    assert main([*args, "--sheet", str(sheet), "--sheet-rows", "2"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["psnr_db"] == want["psnr_db"] and got["seg_palette_accuracy"] == want["seg_palette_accuracy"]
    from PIL import Image

    w, h = Image.open(sheet).size
    assert w == 10 * 96 and h > 2 * 96  # 5 modalities x (original, reconstruction); 2 rows + captions
    assert main([*args, "--sheet", str(sheet)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--sheet", str(tmp_path / "vae.jpg")]) == 2
    assert main(["eval", "vae", "--vae", str(tmp_path / "nothing")]) == 2
    assert f"vae {str(tmp_path / 'nothing')!r} does not exist" in capsys.readouterr().err


def _tensors(folder, pattern="*.safetensors"):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob(pattern)):
        out.update(load_file(f))
    return out


def _assert_only_part_trained(base: Path, run: Path, *, frozen: tuple[str, ...], trained: str) -> None:
    """The run's final weights keep ``base``'s ``frozen`` top-level parts bit for bit (its own
    newest checkpoint too: the trained copy never moved them), and changed the ``trained`` ones."""
    before, after = _tensors(base), _tensors(run / "final")
    assert before.keys() == after.keys()
    kept = [k for k in before if k.split(".")[0] in frozen]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    raw = _tensors(sorted((run / "checkpoints").glob("step-*"))[-1], "model-*.safetensors")
    assert all(torch.equal(before[k], raw[k]) for k in kept)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(trained))


def test_vae_decoder_fine_tune_keeps_the_encoder_and_its_scale_exactly(trained, tmp_path, capsys):
    base = trained["vae"]
    body = (f"component: vae\noutput_dir: {tmp_path}/dec\nema_decay: 0.9\nbase: {{vae: {base}}}\n"
            "extra: {freeze_encoder: true, modality_probs: {seg: 3, image: 1}}\n")  # fmt: skip
    cfg = _cfg(tmp_path, "dec", body, steps=3)
    assert main(["train", "vae", "--config", cfg, "--quiet", "--steps", "2"]) == 0
    assert main(["train", "vae", "--config", cfg, "--quiet", "--resume"]) == 0  # through a bf16 EMA checkpoint
    _assert_only_part_trained(base, tmp_path / "dec", frozen=("encoder", "quant_conv"), trained="decoder.")
    m = json.loads((tmp_path / "dec" / "metrics.json").read_text())
    scale = json.loads((base / "config.json").read_text())["scaling_factor"]
    assert m["scaling_factor"] == scale == json.loads((tmp_path / "dec" / "final" / "config.json").read_text())["scaling_factor"]
    assert m["frozen_encoder_from"] == str(base) and m["steps"] == 3


def test_clip_locked_text_tuning_keeps_the_text_tower_exactly(trained, tmp_path, capsys):
    """``freeze_text``: only the image tower (and the temperature) learn; the text tower, MiniSD's
    text encoder, is bit for bit base.clip's, through a resumed bf16 EMA checkpoint too."""
    base = trained["clip"]
    body = (f"component: clip\noutput_dir: {tmp_path}/lit\nema_decay: 0.9\n"
            f"base: {{tokenizer: {trained['tokenizer']}, clip: {base}}}\nextra: {{freeze_text: true}}\n")  # fmt: skip
    cfg = _cfg(tmp_path, "lit", body, steps=3)
    assert main(["train", "clip", "--config", cfg, "--quiet", "--steps", "2"]) == 0
    assert main(["train", "clip", "--config", cfg, "--quiet", "--resume"]) == 0
    _assert_only_part_trained(base, tmp_path / "lit", frozen=("text_model", "text_projection"), trained="vision_model.")
    m = json.loads((tmp_path / "lit" / "metrics.json").read_text())
    assert m["frozen_text_from"] == str(base) and m["steps"] == 3 and 0 <= m["zero_shot_accuracy"] <= 1
    capsys.readouterr()
    bad = _cfg(tmp_path, "bad", f"component: clip\noutput_dir: {tmp_path}/bad\nbase: {{tokenizer: {trained['tokenizer']}}}\n"
               "extra: {freeze_text: true}\n")  # fmt: skip
    assert main(["train", "clip", "--config", bad, "--quiet"]) == 2
    assert "needs base.clip" in capsys.readouterr().err


def test_vae_modality_odds_are_normalised_and_unlisted_ones_never_drawn():
    from fgdm.training.components import MODALITIES, _modality_probs

    assert _modality_probs({}) is None
    p = _modality_probs({"modality_probs": {"seg": 3, "image": 1}})
    assert dict(zip(MODALITIES, p.tolist(), strict=True)) == {"image": 0.25, "seg": 0.75, "depth": 0.0, "normal": 0.0, "sketch": 0.0}


@pytest.mark.parametrize("extra, message", [
    ("{freeze_encoder: true}", "needs base.vae"),
    ("{modality_probs: {rgb: 1}}", "unknown modalities ['rgb']"),
    ("{modality_probs: {seg: -1}}", "modality_probs.seg must be a number >= 0"),
    ("{modality_probs: {seg: 0}}", "odds 0"),
])  # fmt: skip
def test_vae_fine_tune_settings_are_checked(tmp_path, capsys, extra, message):
    cfg = _cfg(tmp_path, "bad", f"component: vae\noutput_dir: {tmp_path}/bad\nextra: {extra}\n")
    assert main(["train", "vae", "--config", cfg, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_eval_clip_reproduces_the_trainers_zero_shot_accuracy(trained, capsys):
    want = json.loads((trained["clip"].parent / "metrics.json").read_text())
    args = ["eval", "clip", "--clip", str(trained["clip"]), "--n", "3", "--seed", "99", "--size", "64", "--json"]
    assert main(args) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["zero_shot_accuracy"] == want["zero_shot_accuracy"] and got["classes"] == 80
    assert got["holdout_n"] == 3 and got["clip"] == str(trained["clip"])
    assert got["worst"] == []  # only categories with 5+ renders are ranked
    wrong = round(3 * (1 - got["zero_shot_accuracy"]))
    assert sum(k for _, k in got["confusions"]) == wrong and all(" -> " in c for c, _ in got["confusions"])


def test_eval_clip_names_a_folder_it_cannot_load(trained, tmp_path, capsys):
    assert main(["eval", "clip", "--clip", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "clip", "--clip", str(trained["vae"])]) == 2  # a folder of another component
    assert "could not be loaded" in capsys.readouterr().err


def test_prerender_encodes_in_the_run_precision(trained, tmp_path):
    """bf16 runs pre-encode under bf16 autocast, fp32 runs without it; an fp32 run rebuilds a bf16
    cache, while a bf16 run reuses an fp32 one (or one written before the key named the precision)."""
    import dataclasses

    from safetensors.torch import load_file, save_file

    from fgdm.training.components import cached_prerender, load_vae

    seen = []

    class Spy(torch.nn.Module):  # the VAE, recording the autocast state each encode runs in
        def __init__(self, vae):
            super().__init__()
            self.vae, self.config, self.dtype = vae, vae.config, vae.dtype

        def encode(self, x):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return self.vae.encode(x)

    vae = Spy(load_vae(trained["vae"]).eval())
    cfg = load_train_config(trained["unet_cfg"], {"output_dir": str(tmp_path)})
    text_fn = lambda caps: torch.zeros(len(caps), 2, 3)  # text encoding is not what is tested here
    bf16, fp32 = torch.bfloat16, None
    for mp, want in (("bf16", [bf16, bf16]), ("no", [fp32, fp32]), ("bf16", []), ("no", [])):  # 8 scenes, batch 4
        seen.clear()
        lat = cached_prerender(dataclasses.replace(cfg, mixed_precision=mp), vae, text_fn, "cpu", ("image",), {},
                               progress=False)["lat_image"]  # fmt: skip
        assert seen == want and lat.shape == (8, 4, 16, 16)
    cache = tmp_path / "prerender.safetensors"
    key = json.loads(_cache_key(cache))
    assert key.pop("encode_precision") == "no"
    save_file(load_file(str(cache)), str(cache), metadata={"key": json.dumps(key, sort_keys=True)})  # an older cache
    seen.clear()
    cached_prerender(dataclasses.replace(cfg, mixed_precision="bf16"), vae, text_fn, "cpu", ("image",), {}, progress=False)
    assert seen == []
    key["data"]["seed"] += 1  # other scenes: rebuilt
    save_file(load_file(str(cache)), str(cache), metadata={"key": json.dumps(key, sort_keys=True)})
    cached_prerender(dataclasses.replace(cfg, mixed_precision="bf16"), vae, text_fn, "cpu", ("image",), {}, progress=False)
    assert seen == [bf16, bf16]


def test_prerender_is_the_same_every_time(trained):
    """The latents are posterior samples drawn from the data seed, not from whatever state the global
    random stream is in: two builds of one cache are identical (before, they differed per build)."""
    from fgdm.training.components import load_vae, prerender

    vae = load_vae(trained["vae"]).eval()
    cfg = load_train_config(trained["unet_cfg"], {"output_dir": "unused"})
    text_fn = lambda caps: torch.zeros(len(caps), 2, 3)
    torch.manual_seed(1)
    a = prerender(cfg, vae, text_fn, "cpu", ("image",), progress=False)["lat_image"]
    torch.manual_seed(2)
    b = prerender(cfg, vae, text_fn, "cpu", ("image",), progress=False)["lat_image"]
    assert torch.equal(a, b)
    cfg.data.seed += 1  # other scenes (and other noise): other latents
    assert not torch.equal(a, prerender(cfg, vae, text_fn, "cpu", ("image",), progress=False)["lat_image"])


def test_runs_side_by_side_encode_the_shared_cache_once(trained, tmp_path):
    """A run that finds another building the shared cache (its lock held) waits, then loads what
    that one wrote instead of encoding everything again."""
    import dataclasses
    import fcntl
    import threading

    from fgdm.training.components import cached_prerender, load_vae

    encoded = []

    class Spy(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae, self.config, self.dtype = vae, vae.config, vae.dtype

        def encode(self, x):
            encoded.append(len(x))
            return self.vae.encode(x)

    vae = Spy(load_vae(trained["vae"]).eval())
    cfg = dataclasses.replace(load_train_config(trained["unet_cfg"], {"output_dir": str(tmp_path / "b")}),
                              mixed_precision="no")  # fmt: skip
    text_fn = lambda caps: torch.zeros(len(caps), 2, 3)
    folder = tmp_path / "shared"
    first = cached_prerender(cfg, vae, text_fn, "cpu", ("image",), {}, folder=folder, progress=False)
    assert sum(encoded) == 8
    (folder / "prerender.safetensors").rename(tmp_path / "built")  # as if another run were still building it
    got = {}
    with open(folder / ".prerender.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: got.update(cached_prerender(cfg, vae, text_fn, "cpu", ("image",), {},
                                                                        folder=folder, progress=False)))  # fmt: skip
        t.start()
        t.join(timeout=1.0)
        assert t.is_alive() and not got  # waiting for the lock, not encoding
        (tmp_path / "built").rename(folder / "prerender.safetensors")  # the other run finishes its cache
    t.join(timeout=60)
    assert not t.is_alive() and sum(encoded) == 8  # loaded, not encoded again
    assert torch.equal(got["lat_image"], first["lat_image"])


def _cache_key(path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()["key"]


def test_bench_encode_reports_both_precisions(trained, capsys):
    assert main(["bench", "encode", "--vae", str(trained["vae"]), "--size", "64", "--batch", "2", "--n", "1",
                 "--device", "cpu", "--json"]) == 0  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert r["ms_per_scene_fp32"] > 0 and r["ms_per_scene_bf16"] > 0 and r["batches"] == 1
    assert r["bf16_speedup"] == pytest.approx(r["ms_per_scene_fp32"] / r["ms_per_scene_bf16"], rel=0.05)
    assert 0 < r["bf16_latent_rel_error"] < 0.1  # bf16 rounding: small but not zero
    assert main(["bench", "encode", "--vae", str(trained["root"] / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_loss_csv_averages_terms_logged_every_kth_step(tmp_path):
    """A term the loss function reports only every k-th step (distillation: every 10th) lands in
    loss.csv as its mean over the window, whatever log_every is (it was lost when the logged step
    was not one of the k-th), and a resumed run keeps the columns."""
    import csv

    import torch

    from fgdm.training.config import TrainConfig
    from fgdm.training.loop import train

    model = torch.nn.Linear(2, 1)

    def loss_fn(m, batch, step):
        loss = m(batch["x"]).pow(2).mean()
        return loss, ({"distill": float(step)} if step % 3 == 0 else {})

    def batches():
        while True:
            yield {"x": torch.ones(4, 2)}

    cfg = TrainConfig(component="unet", output_dir=str(tmp_path / "r"), steps=8, batch_size=4, log_every=4,
                      checkpoint_every=4)  # fmt: skip
    train(cfg, model, loss_fn, batches(), progress=False)
    cfg.steps = 12
    train(cfg, torch.nn.Linear(2, 1), loss_fn, batches(), resume=True, progress=False)
    rows = list(csv.DictReader((tmp_path / "r" / "loss.csv").open()))
    # steps 0-3 report distill at 0 and 3, steps 4-7 at 6, steps 8-11 at 9
    assert [r["step"] for r in rows] == ["4", "8", "12"]
    assert [float(r["distill"]) for r in rows] == [1.5, 6.0, 9.0]


def test_param_groups_train_at_their_own_rates(tmp_path):
    """``train(params=[{...}, {..., "lr_scale": s}])``: each group's rate is the schedule's times its
    ``lr_scale``, so a group at scale 0 stays exactly as it was while the other one learns."""
    from fgdm.training.config import TrainConfig
    from fgdm.training.loop import train

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    before = [p.detach().clone() for p in model.parameters()]

    def batches():
        while True:
            yield {"x": torch.randn(4, 2)}

    def loss_fn(m, batch, step):
        return (m(batch["x"]) - 1).pow(2).mean(), {}

    cfg = TrainConfig(component="unet", output_dir=str(tmp_path / "g"), steps=3, batch_size=4, ema_decay=None)
    groups = [{"params": list(model[0].parameters()), "lr_scale": 0.0}, {"params": list(model[1].parameters())}]
    res = train(cfg, model, loss_fn, batches(), progress=False, params=groups)
    after = list(res.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(after[:2], before[:2], strict=True))  # scale 0: untouched
    assert all(not torch.equal(a, b) for a, b in zip(after[2:], before[2:], strict=True))


def test_unet_trains_the_text_encoder_jointly(trained, tmp_path, capsys):
    """extra.train_text_encoder: the text encoder trains with the UNet (from base.text_encoder); the
    run writes both; the UNet of its checkpoint assembles; each kind of checkpoint resumes only as its own
    kind; without the setting no encoder is written."""
    from safetensors.torch import load_file, save_file
    from transformers import CLIPModel

    base_text = CLIPModel.from_pretrained(trained["clip"]).text_model.state_dict()
    out = tmp_path / "joint"
    run = ["train", "unet", "--config", trained["unet_cfg"], "--quiet", "--steps", "2", "--output-dir", str(out),
           "--set", f"base.unet={trained['unet']}", "--set", "extra.train_text_encoder=true"]  # fmt: skip
    assert main(run) == 0
    assert json.loads((out / "metrics.json").read_text())["text_encoder_trained"] is True
    te = load_file(str(next((out / "final-text-encoder").glob("*.safetensors"))))
    moved = [k for k in te if k.removeprefix("text_model.") in base_text
             and not torch.allclose(te[k].float(), base_text[k.removeprefix("text_model.")].float())]  # fmt: skip
    assert len(moved) > 10  # the encoder learnt (most of its tensors moved)
    unet_final = load_file(str(next((out / "final").glob("*.safetensors"))))
    start = load_file(str(next(trained["unet"].glob("*.safetensors"))))
    assert unet_final.keys() == start.keys() and any(not torch.equal(unet_final[k], start[k]) for k in start)
    ckpt = sorted((out / "checkpoints").glob("step-*"))[-1]
    assert any(k.startswith("text_encoder.") for k in load_file(str(next(ckpt.glob("ema-*.safetensors")))))
    pipe = tmp_path / "pipe"
    assert main(["train", "assemble", "--tokenizer", str(trained["tokenizer"]), "--text-encoder",
                 str(out / "final-text-encoder"), "--vae", str(trained["vae"]), "--unet", str(ckpt), "--out", str(pipe)]) == 0  # fmt: skip
    assembled = load_file(str(pipe / "text_encoder" / "model.safetensors"))
    assert all(torch.equal(assembled[k], te[k].half()) for k in te)
    res = Text2ImagePipeline.from_pretrained(pipe)("a photo of a dog", num_inference_steps=2)
    assert res.images[0].size == (64, 64)
    again = tmp_path / "from-pipe"  # a new joint run from an assembled (fp16) pipeline, as the device stage
    from_pipe = [a for k in ("tokenizer", "text_encoder", "vae", "unet") for a in ("--set", f"base.{k}={pipe}")]
    assert main([*run[:7], "--output-dir", str(again), *from_pipe, "--set", "extra.train_text_encoder=true"]) == 0
    assert all(v.dtype == torch.float32 for v in load_file(str(next((again / "final-text-encoder").glob("*.safetensors")))).values())
    assert main([*run[:-2], "--resume", "--steps", "3"]) == 2  # a joint checkpoint goes on only as a joint run
    assert "holds the UNet and the text encoder" in capsys.readouterr().err
    assert main([*run, "--resume", "--steps", "3"]) == 0
    from fgdm.training.components import holds_text_encoder

    split = tmp_path / "split"  # the text encoder's keys in a later shard than the first: still found
    split.mkdir()
    whole = load_file(str(next(ckpt.glob("ema-*.safetensors"))))
    save_file({k: v for k, v in whole.items() if k.startswith("unet.")}, str(split / "ema-00000.safetensors"))
    assert not holds_text_encoder(split)
    save_file({k: v for k, v in whole.items() if k.startswith("text_encoder.")}, str(split / "ema-00001.safetensors"))
    assert holds_text_encoder(split) and not holds_text_encoder(tmp_path / "nothing")
    alone = tmp_path / "alone"  # extra.freeze_unet: the encoder trains against the UNet, which stays as it was
    assert main([*run[:5], "--steps", "2", "--output-dir", str(alone), *run[-4:], "--set", "extra.freeze_unet=true"]) == 0
    assert json.loads((alone / "metrics.json").read_text())["unet_trained"] is False
    kept = load_file(str(next((alone / "final").glob("*.safetensors"))))
    assert all(torch.equal(kept[k], start[k]) for k in start)
    te2 = load_file(str(next((alone / "final-text-encoder").glob("*.safetensors"))))
    assert any(not torch.equal(te2[k], te[k]) for k in te) and any(
        not torch.allclose(te2[k].float(), base_text[k.removeprefix("text_model.")].float())
        for k in te2 if k.removeprefix("text_model.") in base_text)  # fmt: skip
    assert main([*run[:-2], "--output-dir", str(tmp_path / "x"), "--set", "extra.freeze_unet=true"]) == 2
    assert "needs extra.train_text_encoder: true and base.unet" in capsys.readouterr().err
    slow = tmp_path / "slow"  # extra.text_encoder_lr: the encoder at its own rate (here ~0), the UNet at optim.lr
    assert main([*run, "--output-dir", str(slow), "--set", "extra.text_encoder_lr=1e-12"]) == 0
    assert json.loads((slow / "metrics.json").read_text())["text_encoder_lr"] == 1e-12
    last = json.loads(sorted((slow / "checkpoints").glob("step-*"))[-1].joinpath("state.json").read_text())
    rates = last["history"][-1]["group_lr"]  # each group's peak rate, by name, in the checkpoint's provenance
    assert rates["text_encoder"] == pytest.approx(1e-12) and rates["unet"] == last["history"][-1]["lr"]
    te3 = load_file(str(next((slow / "final-text-encoder").glob("*.safetensors"))))
    assert all(torch.allclose(te3[k].float(), base_text[k.removeprefix("text_model.")].float(), atol=1e-6)
               for k in te3 if k.removeprefix("text_model.") in base_text)  # fmt: skip
    moved_unet = load_file(str(next((slow / "final").glob("*.safetensors"))))
    assert any(not torch.equal(moved_unet[k], start[k]) for k in start)
    for bad, said in (("-1", "must be a positive number, got -1"), ("true", "must be a positive number, got True")):
        assert main([*run, "--output-dir", str(tmp_path / "y"), "--set", f"extra.text_encoder_lr={bad}"]) == 2
        assert said in capsys.readouterr().err
    assert main([*run[:-2], "--output-dir", str(tmp_path / "y"), "--set", "extra.text_encoder_lr=1e-4"]) == 2
    assert "it needs extra.train_text_encoder: true" in capsys.readouterr().err
    frozen = tmp_path / "frozen"  # the default: no encoder folder, nothing of it trained
    assert main([*run[:-2], "--output-dir", str(frozen)]) == 0
    assert not (frozen / "final-text-encoder").exists()
    assert json.loads((frozen / "metrics.json").read_text())["text_encoder_trained"] is False
    assert main([*run, "--output-dir", str(frozen), "--resume", "--steps", "3"]) == 2
    assert "start a new run with base.unet" in capsys.readouterr().err


def test_bf16_on_a_cpu_that_emulates_it_is_warned_about(tmp_path, monkeypatch, caplog):
    from fgdm.training import loop

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert loop.cpu_runs_bf16_fast(str(info)) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert loop.cpu_runs_bf16_fast(str(info)) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n")
    assert loop.cpu_runs_bf16_fast(str(info)) is True
    assert loop.cpu_runs_bf16_fast(str(tmp_path / "missing")) is None
    monkeypatch.setattr(loop, "cpu_runs_bf16_fast", lambda: False)
    with caplog.at_level("WARNING", logger="fgdm.training.loop"):
        assert loop.warn_if_emulated_bf16("bf16", "cpu", where="pre-encoding")
    assert "pre-encoding in bf16 on a CPU without AVX-512 or native bf16" in caplog.text and "mixed_precision=no" in caplog.text
    assert not loop.warn_if_emulated_bf16("no", "cpu") and not loop.warn_if_emulated_bf16("bf16", "meta")
    monkeypatch.setattr(loop, "cpu_runs_bf16_fast", lambda: True)
    assert not loop.warn_if_emulated_bf16("bf16", "cpu")


def test_the_depth_recipes_build_on_the_shipped_graph(restored_graph):
    """configs/factor_depth_*_cpu.yaml and configs/image_factor_depth*_cpu.yaml (results.md, "A depth
    factor and a depth-conditioned image factor on this CPU"): the depth factor fits the weights budget's
    remainder, and the image recipe starts from the image factor shipped then (commit ba60147, restored by
    scripts/restore_graph.sh) exactly (init_parents)."""
    import torch
    from diffusers import UNet2DConditionModel

    from fgdm.models.factors import (
        build_factor_module,
        check_factor_module,
        factor_forward,
        load_factor_module,
        load_graph_spec,
        pack_parents,
    )
    from fgdm.models.pipeline import default_model_dir
    from fgdm.training.factors import factor_spec, init_factor_from

    root = Path(__file__).resolve().parents[1]
    base_dir = default_model_dir()
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base_dir / "unet"))
    text_width = json.loads((base_dir / "text_encoder" / "config.json").read_text())["hidden_size"]
    depth_cfg = load_train_config(root / "configs" / "factor_depth_scratch_cpu.yaml")
    depth = factor_spec(depth_cfg)
    assert (depth.name, depth.kind, depth.parents, depth.size) == ("depth", "scratch", ("seg",), 64)
    module = build_factor_module(depth, unet, depth_cfg.model)
    check_factor_module(depth, module, unet, text_width)
    assert 2 * sum(p.numel() for p in module.parameters()) <= 1_000_000  # fp16 bytes: inside the 2.6 MB left
    plain_cfg = load_train_config(root / "configs" / "factor_depth_plain_cpu.yaml")  # the probe: wider, no attention
    assert factor_spec(plain_cfg).parents == ("seg",) and factor_spec(plain_cfg).eta == 1.0  # it joins with eta 1
    plain = build_factor_module(factor_spec(plain_cfg), unet, plain_cfg.model)
    check_factor_module(factor_spec(plain_cfg), plain, unet, text_width)
    assert not plain.attn_processors and 2 * sum(p.numel() for p in plain.parameters()) <= 1_800_000
    image_cfg = load_train_config(root / "configs" / "image_factor_depth_cpu.yaml")
    image = factor_spec(image_cfg)
    assert image.parents == ("seg", "depth") and image_cfg.extra["init_parents"] == ["seg"]
    assert image_cfg.extra["init_from"] == "runs/shipped/fgdm-ba60147/image"
    shipped_dir = restored_graph("ba60147") / "image"
    shipped = load_graph_spec(shipped_dir.parent).factors["image"]
    assert shipped.parents == ("seg",)
    old = load_factor_module(shipped, shipped_dir).float()
    new = build_factor_module(image, unet, image_cfg.model)
    init_factor_from(new, shipped_dir, image, image_cfg.extra["init_parents"])
    g = torch.Generator().manual_seed(0)
    x, seg, dep = (torch.randn(1, 4, 32, 32, generator=g) for _ in range(3))
    t, ctx = torch.tensor([400]), torch.randn(1, 8, text_width, generator=g)
    with torch.no_grad():
        want = factor_forward(shipped, old, unet, x, t, ctx, pack_parents(("seg",), {"seg": seg}, x))
        got = factor_forward(image, new, unet, x, t, ctx, pack_parents(image.parents, {"seg": seg, "depth": dep}, x))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # the same recipe, depth dropped half the time: seg alone on 40% of steps
    from fgdm.training.factors import null_probs

    np_cfg = load_train_config(root / "configs" / "image_factor_depth_np_cpu.yaml")
    assert factor_spec(np_cfg) == image and np_cfg.extra["init_from"] == image_cfg.extra["init_from"]
    assert null_probs(np_cfg.extra["null_prob"], image.parents) == {"seg": 0.2, "depth": 0.5}


def test_restore_graph_script(restored_graph, tmp_path):
    """scripts/restore_graph.sh: a graph shipped at a commit, whole and loadable; it refuses a folder
    that holds files, a commit it does not know and one that shipped no graph."""
    import subprocess

    from fgdm.pipelines.factor_graph import FactorGraphPipeline

    g = FactorGraphPipeline.from_pretrained(restored_graph("ba60147"))  # seg (from scratch) -> image adapter
    assert list(g.spec.factors) == ["seg", "image"] and g.spec.factors["image"].parents == ("seg",)
    script = Path(__file__).resolve().parents[1] / "scripts" / "restore_graph.sh"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    for args, needle in ((["ba60147", str(tmp_path / "full")], "is not empty"),
                         (["nosuchrev", str(tmp_path / "a")], "is not a commit"),
                         (["9944728", str(tmp_path / "b")], "ships no graph")):  # fmt: skip
        r = subprocess.run(["bash", str(script), *args], capture_output=True, text=True)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep me" and not (tmp_path / "a").exists()

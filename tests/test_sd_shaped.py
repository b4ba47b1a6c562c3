"""Every method on a base shaped like a real Stable Diffusion 2.x checkpoint, in miniature.

The other tests use a two-level UNet behind a VAE of factor 4 (MiniSD's shape). Real SD has a
four-level UNet with cross-attention at three resolutions, a VAE of factor 8 (so sizes are
multiples of 64), and SD 2.x at 768 px predicts v instead of epsilon. Nothing in fgdm may assume
MiniSD's shape: here the same paths run on such a base."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fgdm.cli import main


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    from fgdm.models.tiny import build_tiny_pipeline

    out = tmp_path_factory.mktemp("sd_shaped") / "base"
    build_tiny_pipeline(out, latent_size=8, vae_factor=8, sd_layout=True, prediction_type="v_prediction")
    return out


def test_generation_and_attention_at_every_level(sd_dir, tmp_path, capsys):
    from fgdm.attention import LayerSelector, list_attention_layers
    from fgdm.pipelines import Text2ImagePipeline

    pipe = Text2ImagePipeline.from_pretrained(sd_dir)
    assert pipe.model.size_factor == 64 and pipe.model.vae_scale_factor == 8
    cross = {lay.resolution for lay in list_attention_layers(pipe.model.unet) if lay.kind == "cross"}
    assert cross == {8, 4, 2, 1}  # three down levels and the mid block
    out = pipe("a dog and a cat", num_inference_steps=3, size=128, attention=LayerSelector(kinds=("cross",)))
    assert out.images[0].size == (128, 128)
    maps = out.attention.aggregate("cross", batch=slice(1, 2))
    assert maps.shape == (1, 16, 16, 77) and torch.allclose(maps.sum(-1), torch.ones(1, 16, 16), atol=1e-4)
    assert main(["generate", "a dog", "--model", str(sd_dir), "--size", "96", "-o", str(tmp_path / "g")]) == 2
    assert "multiple of 64" in capsys.readouterr().err


def test_factor_training_follows_the_base_parameterisation():
    """v-prediction bases: factors learn v (SD 2.x's target), with min-SNR weighted for v; the
    schedule is the base's. Epsilon bases are unchanged."""
    from fgdm.training.components import base_noise_scheduler, min_snr_mse, sd_noise_scheduler, training_target

    cfg = dict(sd_noise_scheduler().config)
    v = base_noise_scheduler({**cfg, "prediction_type": "v_prediction"})
    eps_sched = base_noise_scheduler(cfg)
    assert torch.equal(v.alphas_cumprod, sd_noise_scheduler().alphas_cumprod)
    x0, eps = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(3, 4, 8, 8)
    t = torch.tensor([10, 500, 990])
    a = v.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(training_target(v, x0, eps, t), a.sqrt() * eps - (1 - a).sqrt() * x0, atol=1e-6)
    assert torch.equal(training_target(eps_sched, x0, eps, t), eps)
    a_t, err = v.alphas_cumprod[t], torch.ones(3, 4, 8, 8)
    snr = a_t / (1 - a_t)
    assert torch.allclose(min_snr_mse(err, 0 * err, a_t, 5.0, "v_prediction"), snr.clamp(max=5) / (snr + 1))
    assert torch.allclose(min_snr_mse(err, 0 * err, a_t, 5.0), snr.clamp(max=5) / snr)
    with pytest.raises(ValueError, match="predicts 'sample'"):
        base_noise_scheduler({**cfg, "prediction_type": "sample"})


def _config(tmp, name, component, extra):
    body = (f"component: {component}\noutput_dir: {tmp}/{name}\nsteps: 2\nbatch_size: 2\nlog_every: 1\n"
            f"checkpoint_every: 2\nbase: {{model: {tmp}/base}}\n"
            "data: {n_scenes: 4, size: 64, holdout_n: 2, holdout_seed: 99}\noptim: {lr: 1.0e-3, warmup_steps: 1}\n"
            f"extra: {json.dumps(extra)}\n")  # fmt: skip
    (tmp / f"{name}.yaml").write_text(body)
    return str(tmp / f"{name}.yaml")


def test_fgdm_trains_samples_searches_edits_and_inverts(sd_dir, tmp_path, monkeypatch, capsys):
    import shutil

    import fgdm.training.factors as factors
    from fgdm.compliance.sbpc import sbpc
    from fgdm.editing import sample_from_run
    from fgdm.editing.real import edit_real_image
    from fgdm.models.judge import load_judge
    from fgdm.pipelines.factor_graph import FactorGraphPipeline

    shutil.copytree(sd_dir, tmp_path / "base")
    seen = []
    real_target = factors.training_target
    monkeypatch.setattr(factors, "training_target", lambda noise, *a: seen.append(noise.config.prediction_type)
                        or real_target(noise, *a))  # fmt: skip
    g = str(tmp_path / "graph")
    seg = _config(tmp_path, "seg", "factor", {"variable": "seg", "graph": g, "distill_every": 1, "sample": {"steps": 2}})
    assert main(["train", "factor", "--config", seg, "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval_attention_kl"] > 0 and 0.5 < metrics["eval_mse_ratio"] < 2
    img = _config(tmp_path, "img", "image-factor", {"parents": ["seg"], "graph": g, "sample": {"steps": 2}})
    assert main(["train", "image-factor", "--config", img, "--quiet"]) == 0
    assert seen and set(seen) == {"v_prediction"}  # both trainers learned the base's target
    capsys.readouterr()

    graph = FactorGraphPipeline.from_pretrained(g)
    for mode in ("joint", "ancestral"):
        out = graph("a dog and a cat", mode=mode, sizes={"seg": 64, "image": 128})
        assert out.images[0].size == (128, 128) and out.maps["seg"][0].shape == (64, 64, 3)
    res = sbpc(graph, "a dog and a cat", n=3, cond_steps=2, cond_size=64, image_size=128)
    assert len(res.candidates) == 3 and res.image.size == (128, 128)
    x_t = graph.invert("seg", res.labels, "a dog and a cat", size=64, steps=2)
    assert x_t.shape == (1, 4, 8, 8)
    known = np.full((64, 64), 83, np.uint8)  # what the judge sees in the random image: a dog on the grass
    known[10:40, 10:40] = 16
    monkeypatch.setattr("fgdm.editing.real.extract_map", lambda judge, image, size: known)
    edit = edit_real_image(graph, load_judge(), res.image, "a dog on the grass", replace={"dog": "horse"}, steps=2)
    assert edit.image.size == (64, 64) and edit.edited_map.shape == (64, 64)
    assert np.array_equal(edit.edited_map[50:], known[50:])  # the masked edit leaves the grass alone

    run = tmp_path / "run"
    assert main(["generate", "a dog and a cat", "--factors", "seg,image", "--graph", g, "--size", "128",
                 "-o", str(run), "--quiet"]) == 0  # fmt: skip
    rec = json.loads((run / "record.json").read_text())
    assert rec["kind"] == "generate-fgdm" and rec["parameters"]["per_factor"]["image"]["size"] == 128
    sample, _ = sample_from_run(run)
    objects = sample.objects()
    assert objects  # the random seg factor draws things (deterministic: seed 0)
    target = max(objects, key=lambda i: objects[i][1])
    assert main(["edit", str(run), "--flip", str(target), "-o", str(tmp_path / "edit"), "--quiet"]) == 0
    assert np.asarray(Image.open(tmp_path / "edit" / "image-000.png")).shape == (128, 128, 3)


def test_benchmark_runner(sd_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of a dog\na dog and a cat\n")
    assert main(["eval", "recall", "--prompts", str(prompts), "--model", str(sd_dir), "--steps", "2", "--size", "128",
                 "--out", str(tmp_path / "rec"), "--json", "--quiet"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 and 0 <= result["mean_recall"] <= 1
    assert len(list((tmp_path / "rec" / "images").rglob("*.png"))) == 2

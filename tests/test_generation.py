import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

from fgdm.attention import LayerSelector
from fgdm.cli import main
from fgdm.models.pipeline import check_model_dir, fingerprint, load_base_model
from fgdm.pipelines import Text2ImagePipeline
from fgdm.sampling import ddim_schedule, ddim_step, to_epsilon


def test_tiny_pipeline_is_a_stock_diffusers_pipeline(tiny_sd_dir):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True)
    assert pipe.unet.config.sample_size == 8
    assert (tiny_sd_dir / "tokenizer" / "vocab.json").exists() and (tiny_sd_dir / "tokenizer" / "merges.txt").exists()
    ids = pipe.tokenizer("a photo of a hot dog").input_ids
    assert pipe.tokenizer.unk_token_id not in ids[1:-1]


def test_generation_shapes_determinism_and_per_image_seeds(tiny_model):
    pipe = Text2ImagePipeline(tiny_model)
    a = pipe("a dog and a cat", num_images_per_prompt=2, num_inference_steps=4, seed=3)
    b = pipe("a dog and a cat", num_images_per_prompt=2, num_inference_steps=4, seed=3)
    c = pipe("a dog and a cat", num_images_per_prompt=1, num_inference_steps=4, seed=4)
    assert [im.size for im in a.images] == [(32, 32)] * 2 and a.seeds == [3, 4]
    assert torch.equal(a.latents, b.latents)
    assert torch.allclose(a.latents[1], c.latents[0], rtol=1e-4, atol=1e-4)  # batched == single
    assert not torch.allclose(a.latents[0], a.latents[1])
    assert set(a.timings) == {"encode_s", "denoise_s", "decode_s", "total_s"}


def test_a_seed_list_batches_prompts_each_as_drawn_alone(tiny_model):
    """Images of different prompts share a batch with a seed each; every one equals the image its
    prompt and seed give alone (up to float rounding). Bad seed lists name the argument."""
    pipe = Text2ImagePipeline(tiny_model)
    both = pipe(["a dog and a cat", "a photo of a bus"], num_inference_steps=4, seed=[7, 1003])
    dog = pipe("a dog and a cat", num_inference_steps=4, seed=7)
    bus = pipe("a photo of a bus", num_inference_steps=4, seed=1003)
    assert both.seeds == [7, 1003]
    assert torch.allclose(both.latents[0], dog.latents[0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(both.latents[1], bus.latents[0], rtol=1e-4, atol=1e-4)
    two = pipe("a dog", num_images_per_prompt=2, num_inference_steps=2, seed=[5, 6])
    assert torch.allclose(two.latents, pipe("a dog", num_images_per_prompt=2, num_inference_steps=2, seed=5).latents)
    for bad in ([1], [1, 2, 3], [1, "2"], "12", True, 1.5):
        with pytest.raises(ValueError, match="seed"):
            pipe(["a dog", "a cat"], num_inference_steps=2, seed=bad)


def test_attention_capture_does_not_change_the_image(tiny_model):
    pipe = Text2ImagePipeline(tiny_model)
    plain = pipe("a dog", num_inference_steps=3, seed=0)
    cap = pipe("a dog", num_inference_steps=3, seed=0, attention=LayerSelector(kinds=("cross",)))
    assert torch.allclose(plain.latents, cap.latents, rtol=1e-4, atol=1e-4)
    assert cap.attention.aggregate("cross").shape == (2, 8, 8, 77)  # CFG batch: uncond + cond


def test_guidance_below_one_interpolates_towards_the_unconditional(tiny_model):
    """Any scale >= 0 is CFG's u + s (c - u), as the CLI and the FG-DM pipeline accept: 0 ignores the
    prompt, 1 is the conditional model alone, 0.5 lies between them."""
    pipe = Text2ImagePipeline(tiny_model)
    kw = {"num_inference_steps": 3, "seed": 2}
    dog0, bus0 = pipe("a dog", guidance_scale=0.0, **kw), pipe("a photo of a bus", guidance_scale=0.0, **kw)
    assert torch.allclose(dog0.latents, bus0.latents, atol=1e-6)  # the prompt plays no part
    # at 0 the negative prompt alone steers: as that prompt does at scale 1
    neg = pipe("a photo of a bus", guidance_scale=0.0, negative_prompt="a dog", **kw)
    assert torch.allclose(neg.latents, pipe("a dog", guidance_scale=1.0, **kw).latents, atol=1e-5)
    half, one = pipe("a dog", guidance_scale=0.5, **kw), pipe("a dog", guidance_scale=1.0, **kw)
    assert not torch.allclose(half.latents, dog0.latents) and not torch.allclose(half.latents, one.latents)


def test_save_load_round_trip(tiny_sd_dir, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True)
    pipe.save_pretrained(tmp_path / "copy", safe_serialization=True)
    a = Text2ImagePipeline.from_pretrained(tiny_sd_dir)("a cat", num_inference_steps=3)
    b = Text2ImagePipeline.from_pretrained(tmp_path / "copy")("a cat", num_inference_steps=3)
    assert torch.allclose(a.latents, b.latents, atol=1e-6)
    assert fingerprint(tiny_sd_dir) == fingerprint(tiny_sd_dir)


def test_bad_inputs(tiny_model, caplog):
    pipe = Text2ImagePipeline(tiny_model)
    with pytest.raises(ValueError, match="non-empty"):
        pipe("   ")
    with pytest.raises(ValueError, match="multiple of 8"):
        pipe("a dog", size=36)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
            pipe("a dog", guidance_scale=bad)
    with caplog.at_level(logging.WARNING):
        out = pipe("a dog " * 60, num_inference_steps=2)
    assert "truncated" in caplog.text and len(out.images) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipe("a dog " * 60, num_images_per_prompt=3, num_inference_steps=1)
    assert caplog.text.count("truncated") == 1  # a prompt repeated per image is read (and warned about) once


def test_encode_text_rows_encodes_each_distinct_prompt_once(tiny_model, monkeypatch):
    rows = ["a dog", "a cat", "a dog", "a dog"]
    alone = {p: tiny_model.encode_text([p]) for p in set(rows)}
    seen = []
    real = tiny_model.encode_text
    monkeypatch.setattr(tiny_model, "encode_text", lambda ps, **kw: (seen.append(list(ps)), real(ps, **kw))[1])
    emb, tokens = tiny_model.encode_text_rows(rows)
    assert seen == [["a dog", "a cat"]] and emb.shape[0] == 4 and len(tokens) == 4
    for i, p in enumerate(rows):
        assert torch.allclose(emb[i], alone[p][0][0], atol=1e-5) and tokens[i] == alone[p][1][0]


def test_bad_model_dirs(tiny_sd_dir, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        check_model_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"model_index\.json"):
        check_model_dir(tmp_path / "empty")
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_sd_dir, pickled)
    st = pickled / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save({"x": torch.zeros(1)}, pickled / "unet" / "diffusion_pytorch_model.bin")
    st.unlink()
    with pytest.raises(ValueError, match="pickle"):
        load_base_model(pickled)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_sd_dir, corrupt)
    (corrupt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="could not be loaded"):
        load_base_model(corrupt)


def test_ddim_math():
    sched = ddim_schedule({"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                           "beta_end": 0.012, "steps_offset": 1, "set_alpha_to_one": False}, 10)  # fmt: skip
    assert len(sched.timesteps) == 10 and sched.timesteps[0] > sched.timesteps[-1]
    x0 = torch.randn(2, 4, 4, 4)
    eps = torch.randn_like(x0)
    a_t, a_prev = sched.alphas[0], sched.alphas_prev[0]
    x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
    x_prev, x0_hat = ddim_step(x_t, eps, a_t, a_prev)
    assert torch.allclose(x0_hat, x0, atol=1e-4)
    assert torch.allclose(x_prev, a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps, atol=1e-4)
    v = a_t.sqrt() * eps - (1 - a_t).sqrt() * x0
    assert torch.allclose(to_epsilon(v, x_t, a_t, "v_prediction"), eps, atol=1e-4)
    with pytest.raises(ValueError, match="steps"):
        ddim_schedule({"num_train_timesteps": 1000}, 0)


def test_generate_cli(tiny_sd_dir, tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["generate", "a dog and a cat", "--model", str(tiny_sd_dir), "--steps", "3", "--n", "2", "-o", str(out),
            "--save-attention", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    rec = json.loads((out / "record.json").read_text())
    assert rec["seeds"] == [0, 1] and rec["model"]["fingerprint"] == fingerprint(tiny_sd_dir)
    assert rec["parameters"]["steps"] == 3 and "denoise_s" in rec["timings"]
    for f in rec["files"]:
        assert (out / f).exists()
    assert (out / "attention-001.png").exists()
    assert main(argv) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["generate", "a dog", "--model", str(tmp_path / "missing"), "--quiet", "-o", str(tmp_path / "x")]) == 2
    assert main(["generate", "a dog", "--model", str(tiny_sd_dir), "--size", "36", "-o", str(tmp_path / "y")]) == 2
    assert main(["generate", " ", "--model", str(tiny_sd_dir), "-o", str(tmp_path / "z")]) == 2
    with pytest.raises(SystemExit):  # DDIM's eta is defined on [0, 1]
        main(["generate", "a dog", "--model", str(tiny_sd_dir), "--eta", "1.5"])
    err = capsys.readouterr().err
    assert "missing" in err and "multiple of 8" in err and "empty" in err and "--eta: must be in [0, 1]" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_generate_draws_n_in_batches_without_changing_an_image(tiny_sd_dir, tmp_path):
    """--batch-size only splits the work: image i keeps seed + i, the images and their attention
    maps come out as one call draws them (up to float rounding)."""
    import numpy as np
    from PIL import Image

    def run(name: str, *extra: str) -> Path:
        out = tmp_path / name
        assert main(["generate", "a dog and a cat", "--model", str(tiny_sd_dir), "--steps", "3", "--n", "5",
                     "--save-attention", "--quiet", "-o", str(out), *extra]) == 0  # fmt: skip
        return out

    one, split = run("one"), run("split", "--batch-size", "2")
    rec = json.loads((split / "record.json").read_text())
    assert rec["seeds"] == [0, 1, 2, 3, 4] and rec["parameters"]["batch_size"] == 2
    assert json.loads((one / "record.json").read_text())["parameters"]["batch_size"] == 16
    assert rec["timings"]["total_s"] >= rec["timings"]["denoise_s"] > 0
    for i in range(5):
        for kind in ("image", "attention"):
            a, b = (np.asarray(Image.open(d / f"{kind}-{i:03d}.png"), dtype=int) for d in (one, split))
            assert a.shape == b.shape and np.abs(a - b).max() <= 2, (kind, i)


def test_bench_generate_reports_a_ratio(tiny_sd_dir, capsys):
    assert main(["bench", "generate", "--model", str(tiny_sd_dir), "--steps", "2", "--n", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["steps"] == 2 and r["seconds_per_image"] > 0 and r["capture_overhead_ratio"] > 0
    assert "batch_speedup" not in r  # batches only when asked for
    assert main(["bench", "generate", "--model", str(tiny_sd_dir), "--steps", "2", "--n", "1", "--batch", "3,1,2,3",
                 "--json"]) == 0  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert list(r["seconds_per_image_by_batch"]) == ["1", "2", "3"] and list(r["batch_speedup"]) == ["2", "3"]
    assert r["seconds_per_image_by_batch"]["1"] == r["seconds_per_image"]
    t = r["seconds_per_image_by_batch"]
    assert all(abs(r["batch_speedup"][b] - t["1"] / t[b]) < 0.05 * r["batch_speedup"][b] for b in ("2", "3"))


def test_generate_checks_the_output_folder_before_any_work(tmp_path, capsys):
    out = tmp_path / "g"
    out.mkdir()
    (out / "record.json").write_text("{}")
    assert main(["generate", "a dog", "--model", str(tmp_path / "no-such-model"), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "no-such-model" not in err


def test_eval_samples_sheet_matches_generate(tiny_sd_dir, tmp_path, capsys):
    """fgdm eval samples: rows are prompts, columns model x seed; each image is the very image
    `fgdm generate PROMPT --seed S --n N` makes; the run folder holds images, sheet and record."""
    import numpy as np
    from PIL import Image

    out = tmp_path / "samples"
    args = ["eval", "samples", "--model", str(tiny_sd_dir), "--model", str(tiny_sd_dir), "--label", "a", "--label", "b",
            "--prompt", "a photo of a dog", "--prompt", "a cat on the grass", "--n", "2", "--seed", "3",
            "--steps", "2", "--cell", "32", "-o", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    rec = json.loads((out / "record.json").read_text())
    assert [m["label"] for m in rec["models"]] == ["a", "b"] and rec["parameters"]["size"] == 32
    assert rec["models"][1]["files"][1] == ["images/m1-p001-s3.png", "images/m1-p001-s4.png"]
    sheet = Image.open(out / "sheet.png")
    assert sheet.width == 4 * 32 and sheet.height > 2 * 32
    assert main(["generate", "a cat on the grass", "--model", str(tiny_sd_dir), "--seed", "3", "--n", "2", "--steps",
                 "2", "-o", str(tmp_path / "gen"), "--quiet"]) == 0  # fmt: skip
    for k in range(2):
        want = np.asarray(Image.open(tmp_path / "gen" / f"image-00{k}.png"))
        for m in (0, 1):
            assert np.array_equal(np.asarray(Image.open(out / "images" / f"m{m}-p001-s{3 + k}.png")), want)
    capsys.readouterr()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err  # nothing overwritten
    assert main(["eval", "samples", "--model", str(tiny_sd_dir), "--label", "a", "--label", "b", "--prompt", "x",
                 "-o", str(tmp_path / "n1")]) == 2  # fmt: skip
    assert "one per --model" in capsys.readouterr().err
    assert main(["eval", "samples", "--model", str(tiny_sd_dir), "--prompt", "x", "--prompts", "f.txt"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["eval", "samples", "--model", str(tiny_sd_dir), "--model", str(tmp_path / "nope"), "--prompt", "x",
                 "-o", str(tmp_path / "n2")]) == 2  # fmt: skip
    assert "nope" in capsys.readouterr().err and not (tmp_path / "n2").exists()
    assert main(["eval", "samples", "--model", str(tiny_sd_dir), "--prompt", " ", "-o", str(tmp_path / "n3")]) == 2
    assert "non-empty prompts" in capsys.readouterr().err


def test_denoise_error_and_caption_gain(tiny_sd_dir, tmp_path, capsys):
    """fgdm eval denoise: deterministic; a UNet whose cross-attention adds nothing reads no caption,
    so its three errors are equal and both gains 0; the random tiny UNet's are not; bad input named."""
    from fgdm.eval.denoise import denoise_error

    kw = {"n": 4, "timesteps": (100, 900), "batch": 3, "size": 64, "progress": False}  # renders are >= 64 px
    a, b = denoise_error(tiny_sd_dir, **kw), denoise_error(tiny_sd_dir, **kw)
    assert a["mse"] == b["mse"] and len(a["mse"]["caption"]) == 2
    assert a["mse"]["caption"] != a["mse"]["empty"] and a["caption_gain"]["vs_empty"] != 0
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True)
    with torch.no_grad():
        for name, mod in pipe.unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                mod.weight.zero_()
                mod.bias.zero_()
    blind = tmp_path / "blind"
    pipe.save_pretrained(blind, safe_serialization=True)
    c = denoise_error(blind, **kw)
    assert c["mse"]["caption"] == c["mse"]["empty"] == c["mse"]["wrong"]
    assert c["caption_gain"] == {"vs_empty": 0.0, "vs_wrong": 0.0}
    with pytest.raises(ValueError, match="timesteps"):
        denoise_error(tiny_sd_dir, n=2, timesteps=(1000,), progress=False)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["eval", "denoise", "--model", str(tiny_sd_dir), "--n", "1"])
    assert "--n" in capsys.readouterr().err
    assert main(["eval", "denoise", "--model", str(tiny_sd_dir), "--n", "3", "--size", "64", "--timesteps", "10,500",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["timesteps"] == [10, 500]


def test_contact_sheet_headers_wrap_within_their_cell():
    import numpy as np
    from PIL import ImageFont

    from fgdm.world.sheet import contact_sheet, wrap_to_width

    font = ImageFont.load_default(size=11)
    for text in ("images of gen_dataset_cpu_sg1", "a_single_word_far_too_wide_for_any_cell_of_this_size", "seg"):
        lines = wrap_to_width(text, font, 60)
        assert all(font.getlength(line) <= 60 for line in lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing lost
    tile = np.zeros((32, 32, 3), np.uint8)
    one = contact_sheet([[tile, tile]], headers=["a", "b"], cell=128)
    two = contact_sheet([[tile, tile]], headers=["a much longer header that wraps", "b"], cell=128)
    assert two.height > one.height and two.width == one.width  # room for the wrapped lines, not overlap

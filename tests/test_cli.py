import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgdm.cli import main
from fgdm.world.conditions import encode_segmentation

MULTIGEN = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "multigen_coco_5_1k.json"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_writes_everything(tmp_path, capsys):
    out = tmp_path / "r"
    code, text, _ = run(
        capsys, "world", "render", "--n", "3", "--size", "64", "--seed", "4", "--out", str(out), "--quiet"
    )
    assert code == 0 and str(out) in text
    for name in ("samples.jsonl", "sheet.png", "world.json", "images/000002.png", "normal/000000.png"):
        assert (out / name).exists(), name
    recs = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all({"caption", "grounding", "objects"} <= set(r) for r in recs)
    assert all("bbox" in o for r in recs for o in r["objects"])
    sheet = Image.open(out / "sheet.png")
    assert sheet.width == 5 * 64


def test_render_refuses_existing_render_and_overwrites_on_request(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert run(capsys, "world", "render", "--n", "1", "--size", "64", "--out", out, "--quiet")[0] == 0
    code, _, err = run(capsys, "world", "render", "--n", "1", "--size", "64", "--out", out, "--quiet")
    assert code == 2 and "--overwrite" in err and out in err
    assert run(capsys, "world", "render", "--n", "2", "--size", "64", "--out", out, "--quiet", "--overwrite")[0] == 0
    assert len((tmp_path / "r" / "samples.jsonl").read_text().splitlines()) == 2


def test_render_default_out_is_a_new_numbered_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert run(capsys, "world", "render", "--n", "1", "--size", "64", "--quiet", "--sheet-rows", "0")[0] == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["world-001", "world-002"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--size", "100"], "--size"),
        (["--size", "520"], "--size"),
        (["--size", "big"], "--size"),
        (["--max-objects", "0"], "--max-objects"),
        (["--n", "0"], "--n"),
        (["--categories", "dog,dragon"], "dragon"),
        (["--scene-kinds", "moon"], "moon"),
        (["--min-objects", "5", "--max-objects", "2"], "min_objects"),
        (["--config", "/nonexistent/world.yaml"], "/nonexistent/world.yaml"),
    ],
)
def test_render_bad_input_exits_2_naming_the_argument(tmp_path, capsys, argv, needle):
    out = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        code = main(["world", "render", "--out", str(out), "--quiet", *argv])
        raise SystemExit(code)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_categories_json(capsys):
    code, out, _ = run(capsys, "world", "categories", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 90
    assert rows[16]["name"] == "dog" and rows[16]["sprites"] >= 3 and "puppy" in rows[16]["synonyms"]
    code, out, _ = run(capsys, "world", "categories")
    assert "hair drier" in out


def test_parse(tmp_path, capsys):
    code, out, _ = run(capsys, "world", "parse", "two puppies and a unicorn on the grass", "--json")
    r = json.loads(out)
    assert code == 0 and r["categories"] == ["dog"] and r["unknown"] == ["unicorn"] and r["counts"]["dog"] == 2
    f = tmp_path / "p.txt"
    f.write_text("a cat\n\n# comment\na hot dog\n")
    r = json.loads(run(capsys, "world", "parse", "--prompts", str(f), "--json")[1])
    assert [x["categories"] for x in r] == [["cat"], ["hot dog"]]
    out = run(capsys, "world", "parse", "two puppies and a wine glass on the grass", "a unicorn")[1]
    assert out.splitlines() == ["two puppies and a wine glass on the grass", "  -> dog x2, wine glass; stuff: grass",
                                "a unicorn", "  -> (no known objects)   unknown words: unicorn"]  # as the README says


@pytest.mark.skipif(not MULTIGEN.exists(), reason="shared benchmarks not present")
def test_parse_reads_the_multigen_format(capsys):
    r = json.loads(run(capsys, "world", "parse", "--prompts", str(MULTIGEN), "--json")[1])
    assert len(r) == 1000 and r[0]["categories"] == ["book", "cup", "kite", "mouse", "surfboard"]


@pytest.mark.parametrize("content", [None, "", "{not json", '{"a": 1}', b"\xff\xfe\x00bad"])
def test_unreadable_prompt_files_exit_2(tmp_path, capsys, content):
    f = tmp_path / ("p.json" if isinstance(content, str) and content.startswith("{") else "p.txt")
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    code, _, err = run(capsys, "world", "parse", "--prompts", str(f))
    assert code == 2 and str(f) in err


def test_decode_seg(tmp_path, capsys):
    seg = np.full((64, 64), 81, np.uint8)  # tree (stuff)
    seg[20:40, 20:40] = 16  # dog
    p = tmp_path / "seg.png"
    Image.fromarray(encode_segmentation(seg)).resize((128, 128), Image.BILINEAR).save(p)
    code, out, _ = run(capsys, "world", "decode-seg", str(p), "--json")
    names = [r["name"] for r in json.loads(out)]
    assert code == 0 and sorted(names) == sorted(["dog", "tree"])
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code, _, err = run(capsys, "world", "decode-seg", str(bad))
    assert code == 2 and "bad.png" in err


def test_console_script_end_to_end(tmp_path):
    exe = Path(sys.executable).with_name("fgdm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fgdm.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run([*cmd, "world", "render", "--n", "2", "--size", "64", "--out", str(tmp_path / "r")],
                        capture_output=True, text=True, env=env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*cmd, "world", "render", "--size", "99", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 2 and "--size" in bad.stderr and "Traceback" not in bad.stderr
    many = tmp_path / "many.txt"  # more output than a pipe holds, so the writer meets the closed pipe
    many.write_text("two puppies and a wine glass on the grass\n" * 3000)
    proc = subprocess.Popen([*cmd, "world", "parse", "--prompts", str(many)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert proc.stdout.readline().startswith("two puppies")
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read()
    assert proc.wait() == 141 and err == "", err


def test_render_records_its_command(tmp_path, capsys):
    out = tmp_path / "r"
    run(capsys, "world", "render", "--n", "1", "--size", "64", "--out", str(out), "--quiet", "--max-objects", "2")
    meta = json.loads((out / "world.json").read_text())
    assert meta["command"] == f"fgdm world render --n 1 --size 64 --out {out} --quiet --max-objects 2"
    assert meta["config"]["max_objects"] == 2


def test_world_stats(tmp_path, capsys):
    out = tmp_path / "r"
    run(capsys, "world", "render", "--n", "6", "--size", "64", "--out", str(out), "--quiet", "--sheet-rows", "0")
    code, text, _ = run(capsys, "world", "stats", str(out), "--json")
    stats = json.loads(text)
    recs = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert code == 0 and stats["samples"] == 6
    assert stats["objects_per_scene_mean"] == round(sum(len(r["objects"]) for r in recs) / 6, 3)
    assert sum(stats["scene_kinds"].values()) == 6
    named = [len({g["category"] for g in r["grounding"] if g["kind"] == "thing"}) for r in recs]
    assert stats["categories_named_per_caption_hist"] == {str(k): named.count(k) for k in sorted(set(named))}
    code, _, err = run(capsys, "world", "stats", str(tmp_path / "nothing"))
    assert code == 2 and "nothing" in err


@pytest.mark.parametrize("argv", [
    ["judge"], ["vae", "--vae", "V"], ["recall", "--prompts", "P"], ["multigen", "--prompts", "P"],
    ["visor", "--prompts", "P"], ["sbpc", "--prompts", "P"], ["fgdm", "--prompts", "P"], ["real-edit"],
    ["quality", "--prompts", "P"], ["denoise"], ["palette-decode"],
])  # fmt: skip
def test_eval_progress_bars(argv, monkeypatch):
    """Every eval with progress bars: shown with a table; with --json only when stderr is a terminal
    (the JSON goes to stdout); never with --quiet."""
    from fgdm.cli import _progress, build_parser

    parse = build_parser().parse_args
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert _progress(parse(["eval", *argv])) is True
    assert _progress(parse(["eval", *argv, "--json"])) is False
    assert _progress(parse(["eval", *argv, "--quiet"])) is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _progress(parse(["eval", *argv, "--json"])) is True
    assert _progress(parse(["eval", *argv, "--json", "--quiet"])) is False


def test_console_script_keeps_the_hf_libraries_quiet(tiny_clip_dir, tmp_path):
    """A command that loads transformers/diffusers weights prints fgdm's output only: no "Loading
    weights" bars of the HF libraries, no advice to install torchvision (which breaks this torch).
    ``eval clip`` renders at the MiniCLIP's input size unless --size says otherwise."""
    from transformers import CLIPModel, CLIPTokenizer

    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    clip.config.vision_config.image_size = 64  # the world renders 64 px and up
    clip64 = tmp_path / "clip64"
    CLIPModel(clip.config).save_pretrained(clip64, safe_serialization=True)
    CLIPTokenizer.from_pretrained(tiny_clip_dir).save_pretrained(clip64)
    exe = Path(sys.executable).with_name("fgdm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fgdm.cli"]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"} | {"HF_HUB_OFFLINE": "1"}
    run = subprocess.run([*cmd, "eval", "clip", "--clip", str(clip64), "--n", "2", "--json"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "zero_shot_accuracy" in run.stdout
    assert "Loading weights" not in run.stderr and "torchvision" not in run.stderr, run.stderr
    bad = subprocess.run([*cmd, "eval", "clip", "--clip", str(clip64), "--n", "2", "--size", "128"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 2 and "--size must be this MiniCLIP's input size, 64 px" in bad.stderr, bad.stderr


def test_results_print_as_a_markdown_table(capsys):
    from fgdm.cli import _print_result

    _print_result({"MG2": {"mean": 75.0, "std": 25.0}, "by_position": [37.5, 62.5], "n": 4,
                   "worst": [("car", 1.0), ("bus", 0.5)], "psnr": {"image": 29.1, "seg": 27.8},
                   "by_style": {"night": {"images": 1, "f1": 1.0}}, "path": "a|b"}, as_json=False)  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| metric | value |", "|---|---|"]
    assert lines[2:] == ["| MG2 | 75.0 ± 25.0 |", "| by_position | 37.5, 62.5 |", "| n | 4 |",
                         "| worst | car 1.0, bus 0.5 |", "| psnr | image 29.1, seg 27.8 |",
                         "| by_style | night: images 1, f1 1.0 |", "| path | a\\|b |"]  # fmt: skip
    _print_result({"MG2": {"mean": 75.0, "std": 25.0}}, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"MG2": {"mean": 75.0, "std": 25.0}}


def test_eval_palette_decode_table_and_json(capsys):
    """Exact maps decode exactly with both decoders; under blending (blur, bilinear resizing) the
    naive box decoder invents classes and fgdm's invents fewer — the claim docs/results.md makes."""
    code, out, _ = run(capsys, "eval", "palette-decode", "--n", "3", "--size", "64", "--seed", "1", "--json", "--quiet")
    assert code == 0
    result = json.loads(out)
    assert (result["n"], result["size"], result["seed"]) == (3, 64, 1)
    rows = result["results"]
    assert set(rows) == {"exact", "blur 1.0", "blur 2.0", "bilinear x0.5", "bilinear x2", "noise 10",
                         "down-up + noise 10"}  # fmt: skip
    for dec in ("fgdm", "naive box"):
        assert rows["exact"][dec] == {"pixel_accuracy": 1.0, "class_set_exact": 1.0, "invented_per_image": 0.0,
                                      "lost_per_image": 0.0}  # fmt: skip
    for name in ("blur 1.0", "bilinear x2"):
        fgdm, naive = rows[name]["fgdm"], rows[name]["naive box"]
        assert naive["invented_per_image"] > 0, name
        assert fgdm["invented_per_image"] < naive["invented_per_image"], name
        assert fgdm["pixel_accuracy"] > naive["pixel_accuracy"], name
    code, out, _ = run(capsys, "eval", "palette-decode", "--n", "1", "--size", "64", "--quiet")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("| perturbation | decoder |") and len(lines) == 2 + 7 * 2
    assert lines[2] == "| exact | fgdm | 1.0000 | 1.000 | 0.000 | 0.000 |"


def test_bench_world_honours_the_worker_count_and_leaves_torch_threads_alone(capsys):
    import torch

    threads = torch.get_num_threads()
    code, out, _ = run(capsys, "bench", "world", "--size", "64", "--n", "3", "--workers", "0", "--json")
    assert code == 0 and torch.get_num_threads() == threads
    result = json.loads(out)
    assert result["dataloader_workers"] == 0  # --workers 0 used to be read as "all cores"
    rates = ("render_per_s_1core", "sample_per_s_1core", "dataset_item_per_s_1core", "dataloader_per_s")
    assert all(result[k] > 0 for k in rates)
    assert result["dataloader_vs_1core_ratio"] == pytest.approx(result["dataloader_per_s"] / result["dataset_item_per_s_1core"], abs=0.011)  # both rounded

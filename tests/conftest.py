import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny random-weight SD pipeline directory (32-px images, 8x8 latents), built offline."""
    from fgdm.models.tiny import build_tiny_pipeline

    out = tmp_path_factory.mktemp("tiny_sd")
    build_tiny_pipeline(out)
    return out


@pytest.fixture()
def tiny_model(tiny_sd_dir):
    from fgdm.models.pipeline import load_base_model

    return load_base_model(tiny_sd_dir)


@pytest.fixture()
def random_graph(tiny_model):
    """A factory: an FG-DM graph on the tiny base whose factors have random (non-zero) weights."""
    import torch

    from fgdm.pipelines.factor_graph import FactorGraphPipeline

    def make(spec: dict, scale: float = 0.05, seed: int = 0):
        pipe = FactorGraphPipeline.new(tiny_model, spec)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in pipe.modules.values():
                for p in m.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * scale)
        return pipe

    return make


@pytest.fixture(scope="session")
def tiny_judge_dir(tmp_path_factory):
    """A judge trained for one CPU step through the CLI (near random weights)."""
    from fgdm.cli import main

    tmp = tmp_path_factory.mktemp("tiny_judge")
    cfg = tmp / "j.yaml"
    cfg.write_text(f"component: judge\noutput_dir: {tmp}/j\nsteps: 1\nbatch_size: 2\nlog_every: 1\n"
                   "checkpoint_every: 1\nmodel: {channels: [8, 16], groups: 4}\n"
                   "data: {n_scenes: 4, size: 64, holdout_n: 2, holdout_seed: 5}\n")  # fmt: skip
    assert main(["train", "judge", "--config", str(cfg), "--quiet"]) == 0
    return tmp / "j" / "final"


@pytest.fixture(scope="session")
def tiny_clip_dir(tiny_sd_dir, tmp_path_factory):
    """A tiny random-weight CLIPModel folder (32-px image tower) with the tiny pipeline's tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_sd_dir / "tokenizer")
    clip = CLIPModel(CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 4, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                     "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    ))  # fmt: skip
    out = tmp_path_factory.mktemp("tiny_clip")
    clip.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def restored_graph(tmp_path_factory):
    """A factory: the FG-DM graph the package shipped at commit ``rev``, restored from the git
    history by scripts/restore_graph.sh (what the recipes that continue an earlier shipped factor
    tell their users to run). Skips where the clone has no such history (a shallow clone)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cache = {}

    def get(rev: str) -> Path:
        if rev not in cache:
            have = subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True)
            if have.returncode:
                pytest.skip(f"commit {rev} is not in this clone's history (a shallow clone: git fetch --unshallow)")
            dest = tmp_path_factory.mktemp("restored") / f"fgdm-{rev}"
            subprocess.run(["bash", str(root / "scripts" / "restore_graph.sh"), rev, str(dest)], check=True,
                           capture_output=True)  # fmt: skip
            cache[rev] = dest
        return cache[rev]

    return get

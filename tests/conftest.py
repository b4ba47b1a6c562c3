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

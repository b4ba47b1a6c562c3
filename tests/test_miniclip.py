"""The evaluation MiniCLIP: saved without its text tower, re-joined with a pipeline's text encoder."""

import pytest
import torch

from fgdm.cli import main
from fgdm.models.miniclip import WEIGHTS, default_clip_dir, load_eval_clip


@pytest.fixture(scope="module")
def text_encoder_dir(tiny_clip_dir, tmp_path_factory):
    """A pipeline-like folder whose text_encoder/ is the tiny CLIP's text tower in fp16."""
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    te = CLIPTextModel(clip.config.text_config)
    getattr(te, "text_model", te).load_state_dict(clip.text_model.state_dict())  # transformers 4 nests it
    root = tmp_path_factory.mktemp("pipe")
    te.half().save_pretrained(root / "text_encoder", safe_serialization=True)
    CLIPTokenizer.from_pretrained(tiny_clip_dir).save_pretrained(root / "tokenizer")
    return root


def test_eval_clip_rejoins_its_text_tower(tiny_clip_dir, text_encoder_dir, tmp_path):
    out = tmp_path / "miniclip"
    assert main(["train", "assemble-clip", "--clip", str(tiny_clip_dir), "--out", str(out)]) == 0
    from safetensors import safe_open

    with safe_open(str(out / WEIGHTS), "pt") as f:
        keys = list(f.keys())
        assert keys and not any(k.startswith("text_model.") for k in keys)
        assert {f.get_tensor(k).dtype for k in keys if "position_ids" not in k} == {torch.float16}
    full, tok = load_eval_clip(tiny_clip_dir)
    part, tok2 = load_eval_clip(out, text_encoder=text_encoder_dir)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ids = tok(["a photo of a dog", "a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, tok2(["a photo of a dog", "a cat"], padding="max_length", max_length=77,
                                 return_tensors="pt").input_ids)  # fmt: skip
    with torch.no_grad():
        for fn in (lambda m: m.get_image_features(pixel_values=x), lambda m: m.get_text_features(input_ids=ids)):
            a, b = fn(full), fn(part)
            a, b = (getattr(t, "pooler_output", t) for t in (a, b))
            assert torch.allclose(a, b, atol=2e-2, rtol=2e-2)  # fp16 rounding only


def test_eval_clip_refuses_a_foreign_text_tower(tiny_clip_dir, text_encoder_dir, tmp_path):
    from transformers import CLIPTextModel

    out = tmp_path / "miniclip"
    assert main(["train", "assemble-clip", "--clip", str(tiny_clip_dir), "--out", str(out)]) == 0
    other = tmp_path / "other"
    te = CLIPTextModel.from_pretrained(text_encoder_dir / "text_encoder")
    with torch.no_grad():
        next(te.parameters()).add_(1.0)
    te.save_pretrained(other / "text_encoder", safe_serialization=True)
    with pytest.raises(ValueError, match="not this MiniCLIP's text tower"):
        load_eval_clip(out, text_encoder=other)
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_eval_clip(tmp_path / "nothing")
    if not (default_clip_dir() / "config.json").exists():
        with pytest.raises(ValueError, match="no MiniCLIP is shipped"):
            load_eval_clip()
    assert main(["train", "assemble-clip", "--clip", str(tiny_clip_dir), "--out", str(out)]) == 2  # no --overwrite


def test_eval_clip_with_its_own_text_tower(tiny_clip_dir, text_encoder_dir, tmp_path):
    """--with-text: a complete fp16 MiniCLIP, for a pipeline whose text encoder trained on; it needs no
    pipeline and ignores a foreign text encoder."""
    from safetensors import safe_open
    from transformers import CLIPTextModel

    out = tmp_path / "miniclip"
    assert main(["train", "assemble-clip", "--clip", str(tiny_clip_dir), "--with-text", "--out", str(out)]) == 0
    assert not (out / WEIGHTS).exists()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert any(k.startswith("text_model.") for k in keys)
        assert {f.get_tensor(k).dtype for k in keys if "position_ids" not in k} == {torch.float16}
    other = tmp_path / "other"  # what a trained-on text encoder would be: not this tower
    te = CLIPTextModel.from_pretrained(text_encoder_dir / "text_encoder")
    with torch.no_grad():
        next(te.parameters()).add_(1.0)
    te.save_pretrained(other / "text_encoder", safe_serialization=True)
    full, tok = load_eval_clip(tiny_clip_dir)
    own, tok2 = load_eval_clip(out, text_encoder=other)
    ids = tok(["a photo of a dog"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, tok2(["a photo of a dog"], padding="max_length", max_length=77, return_tensors="pt").input_ids)
    with torch.no_grad():
        a, b = (getattr(t, "pooler_output", t) for t in (full.get_text_features(input_ids=ids),
                                                          own.get_text_features(input_ids=ids)))  # fmt: skip
    assert torch.allclose(a, b.float(), atol=2e-2, rtol=2e-2)  # its own tower, fp16 rounding only
    assert main(["train", "assemble-clip", "--clip", str(tiny_clip_dir), "--with-text", "--out", str(out)]) == 2
    assert main(["train", "assemble-clip", "--clip", str(tiny_clip_dir), "--out", str(out), "--overwrite"]) == 0
    assert (out / WEIGHTS).exists()  # the other kind replaces it with --overwrite
    whole = tmp_path / "whole"  # an evaluation MiniCLIP made whole again, with the text tower it was saved against
    assert main(["train", "assemble-clip", "--clip", str(out), "--text-encoder", str(text_encoder_dir), "--with-text",
                 "--out", str(whole)]) == 0  # fmt: skip
    again, _ = load_eval_clip(whole, text_encoder=other)
    with torch.no_grad():
        c = again.get_text_features(input_ids=ids)
    assert torch.allclose(a, getattr(c, "pooler_output", c).float(), atol=2e-2, rtol=2e-2)
    assert main(["train", "assemble-clip", "--clip", str(out), "--text-encoder", str(other), "--with-text",
                 "--out", str(tmp_path / "wrong")]) == 2  # not the tower it was saved against

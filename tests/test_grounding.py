"""TokenCompose's grounding losses (fgdm.losses.grounding) and the factor trainer's extra.grounding."""

import json

import numpy as np
import pytest
import torch

from fgdm.attention import AttentionLayer, AttentionStore, LayerSelector, attention_control
from fgdm.cli import main
from fgdm.losses import grounding_losses, token_masks
from fgdm.models.factors import GraphSpec, build_factor_module, class_fractions, factor_forward
from fgdm.training.factors import grounding_settings


def _store(maps: dict[int, torch.Tensor]) -> AttentionStore:
    """A store holding one (B, Q, K) cross-attention map per layer side (given as (B, heads, Q, K))."""
    s = AttentionStore(grad=True)
    for r, m in maps.items():
        s.add(AttentionLayer(f"up_blocks.0.attentions.{r}.transformer_blocks.0.attn2.processor", "up", 0, r, "cross"), m)
    return s


def _labels() -> torch.Tensor:
    """Two 8x8 maps: sample 0 has class 3 in its top-left 4x4 quarter, the rest class 7; sample 1 is all 7."""
    lab = torch.full((2, 8, 8), 7, dtype=torch.long)
    lab[0, :4, :4] = 3
    return lab


def test_token_masks_follow_the_named_classes():
    shares = class_fractions(_labels(), (4, 4))
    tok = torch.tensor([[-1, 3, 7, 5], [-1, 3, 7, -1]])
    masks, valid = token_masks(tok, shares)
    assert masks.shape == (2, 4, 16)
    quarter = torch.zeros(4, 4)
    quarter[:2, :2] = 1
    assert torch.equal(masks[0, 1], quarter.flatten())  # class 3: the top-left quarter
    assert torch.equal(masks[0, 2], 1 - quarter.flatten())  # class 7: the rest
    assert torch.equal(masks[1, 2], torch.ones(16)) and masks[0, 0].sum() == 0
    # a token with no class, or whose class is absent from the map, is not grounded
    assert valid.tolist() == [[False, True, True, False], [False, False, True, False]]
    with pytest.raises(ValueError, match="must agree on B"):
        token_masks(tok[:1], shares)


def test_grounding_losses_on_known_maps():
    lab, tok = _labels()[:1], torch.tensor([[-1, 3]])
    inside = torch.zeros(4, 4)
    inside[:2, :2] = 1
    inside = inside.flatten()
    # token 1's attention wholly inside its class's region: L_token = 0
    a = torch.stack([1 - inside * 0.5, inside * 0.5], -1)[None, None]  # (1, 1 head, 16, 2)
    lt, lp = grounding_losses(_store({4: a}), tok, lab)
    assert float(lt) == pytest.approx(0.0, abs=1e-6)
    # a quarter of it inside: (1 - 1/4)^2; the pixel BCE is its plain definition
    u = torch.full((1, 1, 16, 2), 0.5)
    lt, lp = grounding_losses(_store({4: u}), tok, lab)
    assert float(lt) == pytest.approx(0.75**2, rel=1e-5)
    assert float(lp) == pytest.approx(-np.log(0.5), rel=1e-5)
    # layers of two sizes are averaged; the 8x8 layer's region is the same quarter at its own size
    inside8 = torch.zeros(8, 8)
    inside8[:4, :4] = 1
    b8 = torch.stack([1 - inside8.flatten() * 0.5, inside8.flatten() * 0.5], -1)[None, None]
    lt, _ = grounding_losses(_store({4: u, 8: b8}), tok, lab)
    assert float(lt) == pytest.approx(0.75**2 / 2, rel=1e-5)
    # a wide map (8 x 16) on a layer of 4 x 8 positions: the same quarter-height region, on the map's aspect
    wide = torch.full((1, 8, 16), 7, dtype=torch.long)
    wide[0, :4, :8] = 3
    cells = torch.zeros(4, 8)
    cells[:2, :4] = 1
    w8 = torch.stack([1 - cells.flatten() * 0.5, cells.flatten() * 0.5], -1)[None, None]
    assert float(grounding_losses(_store({4: w8}), tok, wide)[0].detach()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="not a grid of the map's aspect"):
        grounding_losses(_store({4: torch.full((1, 1, 14, 2), 0.5)}), tok, lab)
    # no grounded token: zero losses, still attached to the graph
    w = u.clone().requires_grad_(True)
    lt, lp = grounding_losses(_store({4: w}), torch.tensor([[-1, 5]]), lab)
    assert float(lt.detach()) == 0 and float(lp.detach()) == 0 and lt.requires_grad
    with pytest.raises(ValueError, match="no cross-attention maps"):
        grounding_losses(AttentionStore(), tok, lab)
    with pytest.raises(ValueError, match="one row per sample"):
        grounding_losses(_store({4: u}), tok, _labels())
    with pytest.raises(ValueError, match="captured a batch of 1 rows, the samples are 2"):
        grounding_losses(_store({4: u}), torch.tensor([[-1, 3], [-1, 7]]), _labels())
    # rows after the samples' (guidance's unconditional half) are not read
    both = torch.cat([a, torch.full_like(a, 0.5)], 0)
    assert float(grounding_losses(_store({4: both}), tok, lab)[0].detach()) == pytest.approx(0.0, abs=1e-6)


def test_grounding_carries_gradient_to_an_adapter_through_the_frozen_unet(tiny_model):
    unet = tiny_model.unet
    spec = GraphSpec.from_dict({"factors": {"seg": {}, "image": {"kind": "adapter", "parents": ["seg"]}}}).factors["image"]
    adapter = build_factor_module(spec, unet)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    prompts = ["a dog and a cat", "a bus"]
    tok = tiny_model.token_class_ids(prompts)
    assert (tok >= 0).sum(1).tolist()[0] >= 2  # "dog" and "cat" are named
    lab = torch.full((2, 64, 64), 255, dtype=torch.long)
    from fgdm.world.categories import category

    lab[0, :32] = category("dog").id
    lab[0, 32:] = category("cat").id
    lab[1, 10:40, 10:40] = category("bus").id
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 700])
    ctx = tiny_model.encode_text(prompts)[0]
    parents = torch.cat([torch.randn(2, 4, 8, 8), torch.ones(2, 1, 8, 8)], 1)
    store = AttentionStore(grad=True)
    with attention_control(unet, LayerSelector(blocks=("mid", "up"), kinds=("cross",)), store):
        factor_forward(spec, adapter, unet, x, t, ctx, parents)
    lt, lp = grounding_losses(store, tok, lab)
    assert float(lt.detach()) > 0 and float(lp.detach()) > 0
    (lt + lp).backward()
    assert sum(float(p.grad.abs().sum()) for p in adapter.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in unet.parameters())  # the base stays frozen


def test_token_class_ids(tiny_model):
    ids = tiny_model.token_class_ids(["a dog on the grass", "nothing here"])
    ct = tiny_model.class_tokens(["a dog on the grass", "nothing here"])
    assert ids.shape == ct.shape[::2] and ids.dtype == torch.long
    from fgdm.world.categories import category

    named = set(ids[0][ids[0] >= 0].tolist())
    assert named == {category("dog").id, category("grass").id} and (ids[1] == -1).all()


@pytest.mark.parametrize(("value", "needle"), [
    ([1], "must be a mapping"),
    ({"tokens": 1}, "must be a mapping with keys"),
    ({"token": -1}, r"grounding.token must be a weight >= 0, got -1"),
    ({"pixel": True}, r"grounding.pixel must be a weight"),
    ({"blocks": ["side"]}, "grounding.blocks must be"),
    ({"blocks": []}, "grounding.blocks must be"),
])  # fmt: skip
def test_grounding_settings_errors(value, needle):
    with pytest.raises(ValueError, match=needle):
        grounding_settings(value)


def test_grounding_settings_defaults():
    assert grounding_settings(None) is None
    s = grounding_settings({})
    assert (s["token"], s["pixel"]) == (1e-3, 5e-5) and s["select"] == LayerSelector(blocks=("mid", "up"), kinds=("cross",))


def test_training_an_image_factor_with_grounding(tmp_path, tiny_sd_dir, capsys):
    """extra.grounding logs both losses every step, caches the label maps and token classes beside the
    latents, and a dropped caption grounds nothing."""
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(tiny_sd_dir, tmp_path / "base")
    extra = {"parents": ["seg"], "kind": "adapter", "grounding": {"token": 0.1, "pixel": 0.01}}
    body = (f"component: image-factor\noutput_dir: {tmp_path}/g\nsteps: 3\nbatch_size: 4\nlog_every: 1\n"
            f"checkpoint_every: 3\nema_decay: 0.9\nbase: {{model: {tmp_path}/base}}\n"
            "data: {n_scenes: 6, size: 64, holdout_n: 4, holdout_seed: 99}\noptim: {lr: 1.0e-3, warmup_steps: 1}\n"
            f"extra: {json.dumps(extra)}\n")  # fmt: skip
    (tmp_path / "g.yaml").write_text(body)
    assert main(["train", "image-factor", "--config", str(tmp_path / "g.yaml"), "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["grounding"] == extra["grounding"] and metrics["eval_mse_ratio"] > 0
    rows = (tmp_path / "g" / "loss.csv").read_text().splitlines()
    head = rows[0].split(",")
    assert "g_token" in head and "g_pixel" in head and len(rows) == 4
    assert all(float(r.split(",")[head.index("g_pixel")]) > 0 for r in rows[1:])
    cache = load_file(str(tmp_path / "g" / "prerender-64-labels-tokens.safetensors"))
    assert cache["token_classes"].dtype == torch.int16 and cache["token_classes"].shape[0] == 6
    assert (cache["token_classes"] >= 0).any(1).all()  # every world caption names a class
    assert cache["labels"].shape == (6, 64, 64)
    (tmp_path / "bad.yaml").write_text(body.replace('"token": 0.1', '"token": "high"').replace("/g\n", "/bad\n"))
    assert main(["train", "image-factor", "--config", str(tmp_path / "bad.yaml"), "--quiet"]) == 2
    assert "extra.grounding.token must be a weight >= 0, got 'high'" in capsys.readouterr().err

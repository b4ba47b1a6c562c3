import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from fgdm.attention import AttentionStore, LayerSelector, attention_control, list_attention_layers


def _inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.unet.config.sample_size
    x = torch.randn(batch, 4, s, s, generator=g)
    ids = model.tokenizer(
        ["a dog and a cat"] * batch, padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    ctx = model.text_encoder(ids)[0]
    return x, torch.tensor([500] * batch), ctx


def test_layers_are_listed_with_block_kind_and_resolution(tiny_model):
    layers = list_attention_layers(tiny_model.unet)
    assert {(lay.block, lay.kind) for lay in layers} == {
        (b, k) for b in ("down", "mid", "up") for k in ("self", "cross")
    }
    res = {lay.block: lay.resolution for lay in layers}
    assert res == {"down": 8, "mid": 4, "up": 8}
    assert len(layers) == len([n for n in tiny_model.unet.attn_processors if "attn" in n])


def test_capture_shapes_rows_sum_to_one_and_output_unchanged(tiny_model):
    unet = tiny_model.unet
    x, t, ctx = _inputs(tiny_model)
    with torch.no_grad():
        ref = unet(x, t, ctx).sample
        store = AttentionStore()
        with attention_control(unet, LayerSelector(), store) as chosen:
            out = unet(x, t, ctx).sample
    assert torch.allclose(out, ref, atol=1e-5)
    assert len(chosen) == len(store.maps)
    for name, maps in store.maps.items():
        m = maps[0]
        lay = store.layers[name]
        keys = 77 if lay.kind == "cross" else lay.resolution**2
        assert m.shape == (2, lay.resolution**2, keys)
        assert torch.allclose(m.sum(-1), torch.ones_like(m.sum(-1)), atol=1e-5)
    agg = store.aggregate("cross", size=16)
    assert agg.shape == (2, 16, 16, 77)


def test_unselected_layers_keep_sdpa_and_processors_are_restored(tiny_model):
    unet = tiny_model.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    assert set(before.values()) == {AttnProcessor2_0}
    with attention_control(unet, LayerSelector(blocks=("up",), kinds=("cross",)), AttentionStore()) as chosen:
        now = unet.attn_processors
        for name, proc in now.items():
            is_chosen = name in {c.name for c in chosen}
            assert isinstance(proc, AttnProcessor2_0) != is_chosen
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    with attention_control(unet, LayerSelector(resolutions=(99,))) as chosen:
        assert chosen == [] and all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())


def test_logits_capture_and_modulation(tiny_model):
    unet = tiny_model.unet
    x, t, ctx = _inputs(tiny_model)
    store = AttentionStore(what="logits")
    with torch.no_grad(), attention_control(unet, LayerSelector(kinds=("cross",)), store):
        ref = unet(x, t, ctx).sample
    logits = next(iter(store.maps.values()))[0]
    assert not torch.allclose(logits.softmax(-1).sum(-1), logits.sum(-1))  # really pre-softmax

    def only_token_2(layer, lg):
        mask = torch.full_like(lg, float("-inf"))
        mask[..., 2] = 0
        return lg + mask

    probs = AttentionStore()
    with torch.no_grad(), attention_control(unet, LayerSelector(kinds=("cross",)), probs, modulate=only_token_2):
        out = unet(x, t, ctx).sample
    assert not torch.allclose(out, ref)
    m = next(iter(probs.maps.values()))[0]
    assert torch.allclose(m[..., 2], torch.ones_like(m[..., 2]))
    with torch.no_grad(), attention_control(unet, LayerSelector(kinds=("cross",)), modulate=lambda lay, lg: lg):
        same = unet(x, t, ctx).sample
    assert torch.allclose(same, ref, atol=1e-5)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_reaches_the_unet(tiny_model, checkpointing):
    unet = tiny_model.unet.train().requires_grad_(True)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    x, t, ctx = _inputs(tiny_model)
    store = AttentionStore(grad=True)
    # backward runs inside the block: checkpointing recomputes the forward with the same processors
    with attention_control(unet, LayerSelector(blocks=("mid", "up"), kinds=("cross",)), store):
        unet(x, t, ctx.detach())
        loss = store.aggregate("cross")[..., 3].mean()
        n_calls = {k: len(v) for k, v in store.maps.items()}
        loss.backward()
    assert {k: len(v) for k, v in store.maps.items()} == n_calls  # recomputation did not record twice
    q = [p for n, p in unet.named_parameters() if "attn2.to_q" in n and "up_blocks" in n]
    assert q and all(p.grad is not None and p.grad.abs().sum() > 0 for p in q)
    detached = AttentionStore(grad=False)
    with attention_control(unet, LayerSelector(kinds=("cross",)), detached):
        unet(x, t, ctx.detach())
    assert not next(iter(detached.maps.values()))[0].requires_grad


def test_cfg_batch_halves_and_mean_mode(tiny_model):
    unet = tiny_model.unet
    x, t, ctx = _inputs(tiny_model, batch=4)
    store = AttentionStore(mode="mean")
    with torch.no_grad(), attention_control(unet, LayerSelector(kinds=("cross",)), store):
        unet(x, t, ctx)
        unet(x, t, ctx)
    assert all(len(v) == 1 for v in store.maps.values()) and set(store.counts.values()) == {2}
    cond = store.aggregate("cross", batch=slice(2, 4))
    assert cond.shape[0] == 2
    store.reset()
    assert store.maps == {}


def test_bad_selector():
    with pytest.raises(ValueError, match="sideways"):
        LayerSelector(blocks=("sideways",))

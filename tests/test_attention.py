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


# ----------------------------------------------------------------------------- map-guided cross-attention


def test_class_tokens_mark_each_mentions_tokens(tiny_model):
    from fgdm.world.categories import category

    prompts = ["two hot dogs and a teddy bear near a dog", "a photo of a cat"]
    marks = tiny_model.class_tokens(prompts)
    _, tokens = tiny_model.encode_text(prompts)
    words = lambda b, name: "".join(tokens[b][k] for k in marks[b, category(name).id].nonzero().flatten())
    assert words(0, "hot dog").replace("</w>", " ").strip() == "hot dogs"
    assert words(0, "teddy bear").replace("</w>", " ").strip() == "teddy bear"
    assert words(0, "dog").replace("</w>", "") == "dog"
    assert words(1, "cat").replace("</w>", "") == "cat"
    assert marks[0].sum() == 5 and marks[1].sum() == 1 and marks[:, :, 0].sum() == 0  # nothing on the start token


def test_region_bias_adds_its_strength_inside_a_class_and_takes_it_outside(tiny_model):
    from fgdm.attention.control import AttentionLayer
    from fgdm.attention.regions import on_queries, region_bias
    from fgdm.world.categories import NUM_CLASSES, category

    tokens = tiny_model.class_tokens(["a dog and a cat"])  # one prompt row; row 2 plays guidance's empty prompt
    dog, cat = category("dog").id, category("cat").id
    shares = torch.zeros(1, NUM_CLASSES, 8, 8)
    shares[0, dog, :, :4] = 1  # the dog on the left half, the cat nowhere
    modulate = region_bias(shares, tokens, 3.0)
    dog_k, cat_k = tokens[0, dog].nonzero().item(), tokens[0, cat].nonzero().item()
    others = [k for k in range(77) if k not in (dog_k, cat_k)]
    for r in (8, 4):  # the map's grid, and a coarser layer's
        logits = torch.randn(2, 4, r * r, 77)
        diff = modulate(AttentionLayer("x", "down", 0, r, "cross"), logits) - logits
        left = (torch.arange(r * r) % r) < r // 2
        assert torch.allclose(diff[0, :, left, dog_k], torch.tensor(3.0)) and torch.allclose(diff[0, :, ~left, dog_k], torch.tensor(-3.0))
        assert torch.allclose(diff[0, :, :, cat_k], torch.tensor(-3.0))  # named but absent: -3 everywhere
        assert diff[0][..., others].abs().max() < 1e-6 and diff[1].abs().max() == 0  # other tokens, other rows
        assert torch.equal(modulate(AttentionLayer("x", "down", 0, r, "self"), logits), logits)
    # in the UNet: the dog's word takes more of the left half's attention and less of the right's, at every layer
    unet = tiny_model.unet
    x, t, ctx = _inputs(tiny_model, batch=2)
    ref, mod = AttentionStore(), AttentionStore()
    sel = LayerSelector(kinds=("cross",))
    with torch.no_grad():
        with attention_control(unet, sel, ref):
            unet(x, t, ctx)
        with attention_control(unet, sel, mod, modulate=modulate):
            unet(x, t, ctx)
    for name in ref.maps:
        r = ref.layers[name].resolution
        left = (torch.arange(r * r) % r) < r // 2
        a, b = ref.maps[name][0][0, :, dog_k], mod.maps[name][0][0, :, dog_k]
        assert (b[left] > a[left]).all() and (b[~left] < a[~left]).all()
    coarse = on_queries(shares[:, [dog]], 4)  # a 2x2 layer averages 4x4 cells
    assert coarse.flatten().tolist() == [1, 0, 1, 0]
    assert on_queries(shares[:, [dog]], 256).shape == (1, 1, 256)  # a finer one repeats them
    with pytest.raises(ValueError, match="not a grid"):
        on_queries(shares, 60)
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        region_bias(shares, tokens, -1.0)
    with pytest.raises(ValueError, match="must agree on B and C"):
        region_bias(shares[:, :3], tokens, 1.0)


def test_regional_prompts_blend_the_prompts_rows_exactly(tiny_model):
    """Weight 0 is the plain UNet; weight 1 everywhere with another prompt's encoding is the UNet run
    on that prompt, for the prompts' rows only; processors are restored."""
    from fgdm.attention.regions import regional_prompts

    unet = tiny_model.unet
    x, t, ctx = _inputs(tiny_model, batch=2)
    other = tiny_model.encode_text(["a photo of a bus"])[0]
    before = dict(unet.attn_processors)
    with torch.no_grad():
        plain = unet(x, t, ctx).sample
        on_other = unet(x, t, torch.cat([other, ctx[1:]])).sample
        with regional_prompts(unet, other[None], torch.zeros(1, 1, 8, 8)) as chosen:
            zero = unet(x, t, ctx).sample
        with regional_prompts(unet, other[None], torch.ones(1, 1, 8, 8)):
            full = unet(x, t, ctx).sample
        half = torch.zeros(1, 1, 8, 8)
        half[..., :4] = 1
        with regional_prompts(unet, other[None], half):
            part = unet(x, t, ctx).sample
    assert chosen and all(c.kind == "cross" for c in chosen)
    assert unet.attn_processors == before
    torch.testing.assert_close(zero, plain)
    torch.testing.assert_close(full, on_other, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(part[0], plain[0]) and not torch.allclose(part[0], on_other[0])
    torch.testing.assert_close(part[1], plain[1])  # the row after the prompts' rows is untouched
    with pytest.raises(ValueError, match="sum to at most 1"), regional_prompts(unet, torch.cat([other, other])[None],
                                                                                torch.ones(1, 2, 8, 8)):
        pass
    with pytest.raises(ValueError, match="must agree on B and M"), regional_prompts(unet, other[None],
                                                                                     torch.ones(1, 2, 8, 8) / 2):
        pass
    assert unet.attn_processors == before

"""FG-DM core on a tiny random SD base: graphs, factor modules, joint sampling, distillation,
training into a graph (continual learning), save/load, the CLI."""

import hashlib
import json

import numpy as np
import pytest
import torch

from fgdm.attention import AttentionStore, LayerSelector, attention_control
from fgdm.cli import main
from fgdm.losses import attention_distillation, resize_attention
from fgdm.models.factors import (
    FactorAdapter,
    GraphSpec,
    build_factor_module,
    factor_forward,
    load_graph_spec,
    pack_parents,
    unet_feature_targets,
)
from fgdm.pipelines.factor_graph import FactorGraphPipeline, condition_rgb
from fgdm.sampling import FactorRun, KeepOutside, ddim_schedule, sample_ddim, sample_graph, step_plan
from fgdm.training.factors import distillation_loss

GRAPH = {"factors": {"seg": {"steps": 3}, "depth": {"parents": ["seg"], "steps": 3},
                     "image": {"kind": "controlnet", "parents": ["seg", "depth"], "steps": 3}}}  # fmt: skip


def _perturb(module, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module


@pytest.fixture()
def graph(random_graph):
    return random_graph(GRAPH)


# ----------------------------------------------------------------------------- graph validation


@pytest.mark.parametrize(
    ("factors", "needle"),
    [
        ({"seg": {"parents": ["depth"]}, "depth": {"parents": ["seg"]}}, "cycle: .*seg -> depth -> seg|cycle"),
        ({"image": {"kind": "controlnet", "parents": ["seg"]}}, r"parents \['seg'\] that are not in the graph"),
        ({"pose": {}}, "unknown factor 'pose'"),
        ({"seg": {"kind": "lora"}}, "kind 'lora'"),
        ({"image": {"kind": "controlnet"}}, "controlnet with no parents"),
        ({"seg": {"parents": ["image"]}, "image": {}}, "conditioned on the image"),
        ({"seg": {"parents": ["seg"]}}, "itself as a parent"),
        ({"seg": {"steps": 0}}, "steps must be a positive integer"),
        ({"seg": {"size": 60}}, "size must be a multiple of 8"),
        ({"seg": {"guidance": 0.5}}, "guidance must be a number >= 1"),
        ({"seg": {"colour": 1}}, r"unknown keys \['colour'\]"),
        ({"depth": {"eta": 1.5}}, r"factor 'depth' eta must be a number in \[0, 1\]"),
        ({"depth": {"eta": "1"}}, "eta must be a number"),
        ({"seg": {"seg_input": "rgb"}}, r"seg_input must be one of \['latent', 'classes'\], got 'rgb'"),
        ({"depth": {"seg_input": "classes"}}, r"seg_input 'classes' but no seg parent \(its parents: \[\]\)"),
    ],
)
def test_graph_validation_errors(factors, needle):
    with pytest.raises(ValueError, match=needle):
        GraphSpec.from_dict({"factors": factors})


def test_graph_is_topologically_ordered_and_round_trips(tmp_path):
    g = GraphSpec.from_dict({"factors": {"image": {"kind": "controlnet", "parents": ["depth", "seg"]},
                                         "depth": {"parents": ["seg"]}, "seg": {}}})  # fmt: skip
    assert g.order == ["seg", "depth", "image"] and g.first_factors() == ["seg"]
    (tmp_path / "g.yaml").write_text("factors: {seg: {}, normal: {parents: [seg], size: 64}}\n")
    assert load_graph_spec(tmp_path / "g.yaml").factors["normal"].size == 64
    (tmp_path / "bad.yaml").write_text("factors: [seg")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_graph_spec(tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------- modules


def test_untrained_adapter_leaves_the_base_unchanged_and_features_fit(tiny_model):
    unet = tiny_model.unet
    spec = GraphSpec.from_dict({"factors": {"seg": {}}}).factors["seg"]
    adapter = build_factor_module(spec, unet)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    ctx = tiny_model.encode_text(["a dog", "a cat"])[0]
    base = unet(x, t, encoder_hidden_states=ctx).sample
    assert torch.allclose(factor_forward(spec, adapter, unet, x, t, ctx, None), base, atol=1e-6)
    _perturb(adapter)
    assert not torch.allclose(factor_forward(spec, adapter, unet, x, t, ctx, None), base, atol=1e-4)
    feats = adapter(x, t)
    assert [f.shape[1] for f in feats] == list(unet.config.block_out_channels)
    assert [f.shape[-1] for f in feats] == [8, 4]


def test_feature_targets_of_an_sd_and_a_minisd_unet():
    class C:
        down_block_types = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
        block_out_channels = (320, 640, 1280, 1280)

    assert unet_feature_targets(C) == ((320, 640, 1280, 1280), (1, 2, 4, 8))
    C.down_block_types = ("CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert unet_feature_targets(C)[1] == (1, 4, 4)  # a non-final plain block adds after its downsampler


def test_time_conditioning_matters_and_can_be_turned_off():
    a = _perturb(FactorAdapter(in_channels=4, channels=(8, 16), out_channels=(16, 32), out_strides=(1, 2)))
    x = torch.randn(1, 4, 8, 8)
    assert not torch.allclose(a(x, torch.tensor([10]))[0], a(x, torch.tensor([900]))[0])
    b = _perturb(FactorAdapter(in_channels=4, channels=(8, 16), out_channels=(16, 32), out_strides=(1, 2),
                               time_conditioned=False))  # fmt: skip
    assert torch.equal(b(x, torch.tensor([10]))[0], b(x, torch.tensor([900]))[0])
    with pytest.raises(ValueError, match="one entry per UNet down block"):
        FactorAdapter(channels=(8,), out_channels=(16, 32), out_strides=(1, 2))


def test_a_text_conditioned_adapter_reads_the_caption_and_round_trips(tiny_model, tmp_path):
    from fgdm.models.factors import check_factor_module, load_factor_module

    unet = tiny_model.unet
    spec = GraphSpec.from_dict({"factors": {"seg": {}}}).factors["seg"]
    adapter = build_factor_module(spec, unet, {"text_conditioned": True})
    assert adapter.config.text_dim == unet.config.cross_attention_dim
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    dog, bus = tiny_model.encode_text(["a dog", "a bus"])[0].chunk(2)
    ctx = torch.cat([dog, dog])
    base = unet(x, t, encoder_hidden_states=ctx).sample
    # fresh, it is the identity on the base, as the paper's adapter is
    assert torch.allclose(factor_forward(spec, adapter, unet, x, t, ctx, None), base, atol=1e-6)
    _perturb(adapter, 0.2)
    feats_dog = adapter(x, t, ctx)
    feats_bus = adapter(x, t, torch.cat([bus, bus]))
    assert not torch.allclose(feats_dog[0], feats_bus[0], atol=1e-4)  # the caption changes its features
    assert torch.allclose(adapter(x, t, dog)[0], feats_dog[0], atol=1e-6)  # one caption broadcasts over the batch
    with pytest.raises(ValueError, match=r"text-conditioned .*pass context"):
        adapter(x, t)
    # gradient reaches the text path
    factor_forward(spec, adapter, unet, x, t, ctx, None).pow(2).mean().backward()
    assert float(adapter.text_attn[0].k.weight.grad.abs().sum()) > 0
    adapter.save_pretrained(tmp_path / "seg", safe_serialization=True)
    loaded = load_factor_module(spec, tmp_path / "seg")
    assert torch.equal(loaded(x, t, ctx)[0], feats_dog[0])
    check_factor_module(spec, loaded, unet, unet.config.cross_attention_dim)
    with pytest.raises(ValueError, match="reads text of width"):
        check_factor_module(spec, loaded, unet, unet.config.cross_attention_dim + 1)
    # the paper's adapter (no text) ignores a context
    plain = _perturb(build_factor_module(spec, unet))
    assert plain.config.text_dim is None and torch.equal(plain(x, t)[0], plain(x, t, ctx)[0])


def test_pack_parents_nulls_missing_parents_and_resizes():
    like = torch.zeros(2, 4, 8, 8)
    seg = torch.randn(2, 4, 4, 4)
    p = pack_parents(("seg", "depth"), {"seg": seg, "depth": None}, like)
    assert p.shape == (2, 10, 8, 8)
    assert torch.all(p[:, 4] == 1) and torch.all(p[:, 5:] == 0)
    assert torch.allclose(p[:, :4].mean((2, 3)), seg.mean((2, 3)), atol=1e-5)  # bilinear keeps the mean


def test_scratch_factor_takes_its_parents_concatenated(tiny_model):
    spec = GraphSpec.from_dict({"factors": {"seg": {}, "depth": {"kind": "scratch", "parents": ["seg"]}}}).factors["depth"]
    net = build_factor_module(spec, tiny_model.unet)
    assert net.config.in_channels == 4 + 5
    x = torch.randn(1, 4, 8, 8)
    ctx = tiny_model.encode_text(["a dog"])[0]
    packed = pack_parents(spec.parents, {"seg": torch.randn(1, 4, 8, 8)}, x)
    assert factor_forward(spec, net, tiny_model.unet, x, torch.tensor([5]), ctx, packed).shape == x.shape


# ----------------------------------------------------------------------------- sampling


def test_step_plan_gives_every_factor_its_steps_starting_together():
    plan = step_plan([10, 4, 1])
    assert len(plan) == 10 and plan[0] == [0, 1, 2]
    assert [sum(f == k for g in plan for f in g) for k in range(3)] == [10, 4, 1]


def test_joint_sampler_with_one_factor_is_plain_ddim(tiny_model):
    sched = ddim_schedule(tiny_model.scheduler.config, 5)
    w = torch.randn(4, 4)

    def den(x, t, parents=None):
        return torch.einsum("ij,bjhw->bihw", w, x) * 0.1 + t.float().view(-1, 1, 1, 1) * 1e-4

    x0 = torch.randn(2, 4, 8, 8)
    want = sample_ddim(lambda x, t: den(x, t), x0.clone(), sched)
    got = sample_graph([FactorRun("seg", (), den, x0.clone(), sched)])["seg"]
    assert torch.equal(want, got)


def test_keep_outside_holds_the_latent_to_its_path_outside_the_mask(tiny_model):
    sched = ddim_schedule(tiny_model.scheduler.config, 4)
    path = [torch.full((1, 4, 4, 4), float(k)) for k in range(5)]  # x_T ... clean
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # the top half is free
    seen = []

    def den(x, t, p):
        seen.append(x.clone())
        return 0.3 * x

    x = torch.randn(1, 4, 4, 4)
    free = sample_graph([FactorRun("seg", (), den, x.clone(), sched)])["seg"]
    got = sample_graph([FactorRun("seg", (), den, x.clone(), sched, keep=KeepOutside(mask, path))])["seg"]
    assert torch.equal(got[..., 2:, :], path[-1][..., 2:, :])  # held: the clean end of the path
    assert torch.equal(seen[-4][..., 2:, :], path[0][..., 2:, :])  # it starts on x_T there
    assert all(torch.equal(seen[-4 + i][..., 2:, :], path[i][..., 2:, :]) for i in range(4))  # and follows the path
    assert not torch.equal(got[..., :2, :], path[-1][..., :2, :]) and not torch.equal(got, free)
    whole = sample_graph([FactorRun("seg", (), den, x.clone(), sched, keep=KeepOutside(torch.ones(1, 1, 4, 4), path))])
    assert torch.equal(whole["seg"], free)  # a mask of ones is unmasked sampling
    with pytest.raises(ValueError, match=r"keep\.path holds 3 latents; a schedule of 4 steps needs 5"):
        FactorRun("seg", (), den, x.clone(), sched, keep=KeepOutside(mask, path[:3]))
    with pytest.raises(ValueError, match=r"keep\.mask is \(2, 2\)"):
        FactorRun("seg", (), den, x.clone(), sched, keep=KeepOutside(torch.ones(1, 1, 2, 2), path))
    with pytest.raises(ValueError, match=r"keep\.path is \(8, 8\), its latent \(4, 4\)"):
        FactorRun("seg", (), den, x.clone(), sched, keep=KeepOutside(mask, [torch.zeros(1, 4, 8, 8)] * 5))


def test_joint_children_see_their_parents_current_estimate_ancestral_the_final(tiny_model):
    sched = ddim_schedule(tiny_model.scheduler.config, 4)
    seen = {"joint": [], "ancestral": []}

    for mode in seen:

        def parent(x, t, p):
            return 0.5 * x

        def child(x, t, p, mode=mode):
            seen[mode].append(p["seg"].clone())
            return 0.1 * x

        runs = [FactorRun("seg", (), parent, torch.ones(1, 4, 2, 2), sched),
                FactorRun("image", ("seg",), child, torch.ones(1, 4, 2, 2), sched)]  # fmt: skip
        out = sample_graph(runs, mode=mode)
    assert len(seen["joint"]) == len(seen["ancestral"]) == 4
    assert all(torch.equal(s, out["seg"]) for s in seen["ancestral"])  # the finished parent
    assert not torch.allclose(seen["joint"][0], seen["joint"][-1])  # estimates that move during sampling
    with pytest.raises(ValueError, match="before its parents"):
        sample_graph(runs[::-1])


def test_subset_sampling_feeds_null_conditions(graph):
    seen = []
    net = graph.modules["image"]
    hook = net.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs["controlnet_cond"].clone()),
                                     with_kwargs=True)  # fmt: skip
    out = graph("a dog", factors=["image"], guidance={"image": 1.0})
    assert out.sampled == ["image"] and len(out.images) == 1 and out.maps == {}
    assert seen and all(torch.all(c == 0) for c in seen)  # both parents null: zero latents, presence 0
    seen.clear()
    seg = np.zeros((32, 32), np.uint8)
    seg[8:24, 8:24] = 16  # a dog
    out = graph("a dog", factors=["image"], given={"seg": seg}, guidance={"image": 1.0})
    hook.remove()
    assert out.given == ["seg"] and "seg" in out.maps
    assert out.labels is not None and out.palette_fit is None  # a given map's fit is not the sampler's
    assert all(torch.all(c[:, 4] == 1) and torch.all(c[:, 5:] == 0) for c in seen)  # seg given, depth null
    assert np.array_equal(out.labels[0], seg)  # returned as given
    depth = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (16, 1))  # a smaller map: resized to the image's 32
    out = graph("a dog", factors=["image"], given={"depth": depth}, guidance={"image": 1.0})
    assert out.labels is None and np.array_equal(out.maps["depth"][0], condition_rgb("depth", depth, 32))


@pytest.mark.parametrize("kind", ["adapter", "controlnet", "scratch"])
def test_dropping_a_parent_runs_exactly_as_that_parent_null(random_graph, kind, tmp_path, capsys):
    """A graph shipped without a factor that another reads (assemble-graph --factors ... --drop-parents):
    the reader loses that parent's input channels and gives what it gave with the parent null."""
    from fgdm.models.factors import drop_parents
    from fgdm.pipelines.factor_graph import FactorGraphPipeline

    full = random_graph({"factors": {"seg": {"steps": 2}, "depth": {"parents": ["seg"], "steps": 2},
                                     "normal": {"parents": ["seg"], "steps": 2},
                                     "image": {"kind": kind, "parents": ["seg", "depth", "normal"], "steps": 2}}})  # fmt: skip
    sub = full.subset(["seg", "normal", "image"], drop_parents=True)
    assert sub.spec.factors["image"].parents == ("seg", "normal") and sub.spec.info["dropped_parents"] == {"image": ["depth"]}
    a = full("a dog on the grass", factors=["seg", "normal", "image"], seed=2)  # depth not sampled: null
    b = sub("a dog on the grass", factors=["seg", "normal", "image"], seed=2)
    assert torch.allclose(a.latents["image"], b.latents["image"], atol=1e-5)
    assert not torch.allclose(a.latents["image"], full("a dog on the grass", seed=2).latents["image"], atol=1e-3)
    # it saves, loads and validates like any graph; the module reads 5 fewer channels
    g = sub.save_pretrained(tmp_path / "g")
    again = FactorGraphPipeline.from_pretrained(g)
    assert again.spec.factors["image"].parents == ("seg", "normal")
    conv = "controlnet_cond_embedding.conv_in" if kind == "controlnet" else "conv_in"
    width = dict(full.modules["image"].named_modules())[conv].in_channels
    assert dict(again.modules["image"].named_modules())[conv].in_channels == width - 5
    assert torch.allclose(again("a dog on the grass", seed=2).latents["image"], b.latents["image"], atol=1e-5)
    # errors: not a parent; an adapter or ControlNet must keep one
    with pytest.raises(ValueError, match=r"\['sky'\] are not its parents"):
        drop_parents(full.spec.factors["image"], full.modules["image"], ["sky"])
    if kind != "scratch":
        with pytest.raises(ValueError, match="must keep at least one of its parents"):
            drop_parents(full.spec.factors["image"], full.modules["image"], ["seg", "depth", "normal"])
    # the CLI: --drop-parents only with --factors, and it says what it dropped
    src = full.save_pretrained(tmp_path / "full")
    assert main(["train", "assemble-graph", "--graph", str(src), "--factors", "seg,normal,image", "--drop-parents",
                 "--out", str(tmp_path / "cli"), "--fp32"]) == 0  # fmt: skip
    assert "image without depth" in capsys.readouterr().out
    assert main(["train", "assemble-graph", "--graph", str(src), "--drop-parents", "--out", str(tmp_path / "x")]) == 2
    assert "--drop-parents goes with --factors" in capsys.readouterr().err


def test_joint_and_ancestral_differ_and_are_deterministic(graph):
    a = graph("a dog and a cat", seed=3)
    b = graph("a dog and a cat", seed=3)
    c = graph("a dog and a cat", seed=3, mode="ancestral")
    assert all(torch.equal(a.latents[k], b.latents[k]) for k in a.latents)
    assert torch.equal(a.latents["seg"], c.latents["seg"])  # the root factor does not depend on the mode
    assert a.palette_fit == c.palette_fit and len(a.palette_fit) == 1 and 0 <= a.palette_fit[0] <= 1
    assert not torch.allclose(a.latents["image"], c.latents["image"])
    assert set(a.timings) >= {"factor_seg_s", "factor_depth_s", "factor_image_s", "total_s"}
    assert a.labels[0].shape == (32, 32) and a.maps["seg"][0].shape == (32, 32, 3)
    # the seg factor's noise does not depend on which other factors run
    assert torch.equal(graph("a dog and a cat", seed=3, factors=["seg"]).latents["seg"], a.latents["seg"])


def test_a_batch_of_prompts_with_their_own_seeds_and_maps_is_each_drawn_alone(graph):
    """Prompts share a batch, each with its seed and its given map (one per prompt), and each
    sample equals its own call's: joint over every factor, and the image factor given a map."""
    both = graph(["a dog and a cat", "a photo of a bus"], seed=[3, 1004])
    for i, (prompt, s) in enumerate([("a dog and a cat", 3), ("a photo of a bus", 1004)]):
        alone = graph(prompt, seed=s)
        assert all(torch.allclose(both.latents[k][i], alone.latents[k][0], atol=1e-4) for k in alone.latents)
    assert both.seeds == [3, 1004] and len(both.images) == 2 and len(both.labels) == len(both.palette_fit) == 2
    # a repeated prompt is encoded once; every row still reads its own prompt
    three = graph(["a photo of a bus", "a dog and a cat", "a photo of a bus"], factors=["seg"], seed=[1004, 3, 7])
    assert torch.allclose(three.latents["seg"][1], both.latents["seg"][0], atol=1e-4)
    assert torch.allclose(three.latents["seg"][0], both.latents["seg"][1], atol=1e-4)
    alone = graph("a photo of a bus", factors=["seg"], seed=7)
    assert torch.allclose(three.latents["seg"][2], alone.latents["seg"][0], atol=1e-4)
    seg = [np.zeros((32, 32), np.uint8), np.full((32, 32), 16, np.uint8)]  # no object; all dog
    two = graph(["a dog", "a dog"], factors=["image"], given={"seg": seg}, num_images_per_prompt=2, seed=[0, 1, 2, 3])
    assert two.given == ["seg"] and len(two.images) == 4
    z = two.latents["seg"]  # the map of each prompt, for its two samples
    assert torch.equal(z[0], z[1]) and torch.equal(z[2], z[3]) and not torch.allclose(z[0], z[2])
    for i, m in enumerate(seg):
        alone = graph("a dog", factors=["image"], given={"seg": m}, num_images_per_prompt=2, seed=2 * i)
        assert torch.allclose(two.latents["image"][2 * i : 2 * i + 2], alone.latents["image"], atol=1e-4)
    with pytest.raises(ValueError, match=r"given\['seg'\]: a list needs one map per prompt \(2\), got 1"):
        graph(["a dog", "a cat"], factors=["image"], given={"seg": seg[:1]})
    with pytest.raises(ValueError, match="seed"):
        graph(["a dog", "a cat"], factors=["seg"], seed=[1])
    with pytest.raises(ValueError, match="prompt"):
        graph([], factors=["seg"])


def test_per_factor_sizes_steps_and_condition_guidance(graph):
    out = graph("a dog", sizes={"seg": 16, "depth": 16}, steps={"seg": 2, "depth": 2, "image": 3})
    assert out.latents["seg"].shape[-1] == 4 and out.latents["image"].shape[-1] == 8
    graph.spec.factors["image"].cond_guidance = 2.0
    guided = graph("a dog", factors=["seg", "image"])
    graph.spec.factors["image"].cond_guidance = 1.0
    plain = graph("a dog", factors=["seg", "image"])
    assert not torch.allclose(guided.latents["image"], plain.latents["image"])


def test_per_factor_eta_from_the_graph_and_overridden_per_call(graph):
    """graph.yaml's eta applies to its factor only; a call's number sets every factor's, a dict some."""
    plain = graph("a dog", factors=["seg", "image"], seed=2)
    graph.spec.factors["image"].eta = 1.0
    try:
        noisy = graph("a dog", factors=["seg", "image"], seed=2)
        again = graph("a dog", factors=["seg", "image"], seed=2)
        zero = graph("a dog", factors=["seg", "image"], seed=2, eta=0.0)
        seg_only = graph("a dog", factors=["seg", "image"], seed=2, eta={"seg": 1.0, "image": 0.0})
    finally:
        graph.spec.factors["image"].eta = 0.0
    assert not torch.allclose(noisy.latents["image"], plain.latents["image"])  # the image factor's eta
    assert torch.equal(noisy.latents["seg"], plain.latents["seg"])  # and only its own
    assert all(torch.equal(noisy.latents[k], again.latents[k]) for k in noisy.latents)  # seeded noise
    assert all(torch.equal(zero.latents[k], plain.latents[k]) for k in plain.latents)  # a number overrides the graph
    assert not torch.allclose(seg_only.latents["seg"], plain.latents["seg"])
    with pytest.raises(ValueError, match=r"eta: \['depth'\] are not among the sampled factors"):
        graph("a dog", factors=["seg"], eta={"depth": 1.0})
    with pytest.raises(ValueError, match=r"eta\['seg'\] must be a number in \[0, 1\]"):
        graph("a dog", factors=["seg"], eta=2.0)


def test_call_bad_inputs(graph):
    for kwargs, needle in [
        ({"factors": ["normal"]}, r"\['normal'\] not in this graph"),
        ({"factors": ["seg"], "given": {"seg": np.zeros((32, 32), np.uint8)}}, "both sampled and given"),
        ({"factors": []}, "factors is empty"),
        ({"mode": "parallel"}, "mode must be"),
        ({"sizes": {"seg": 12}}, "size of factor 'seg' must be a positive multiple of 8"),
        ({"steps": {"seg": 0}}, "steps of factor 'seg'"),
        ({"sizes": {"normal": 64}}, r"sizes: \['normal'\] not in this graph"),
        ({"factors": ["seg"], "init_latents": {"image": torch.zeros(1, 4, 8, 8)}}, "init_latents"),
    ]:
        with pytest.raises(ValueError, match=needle):
            graph("a dog", **kwargs)
    with pytest.raises(ValueError, match="given normal must be an"):
        condition_rgb("normal", np.zeros((8, 8)), 32)


# ----------------------------------------------------------------------------- distillation


def test_resized_attention_rows_stay_distributions():
    m = torch.rand(2, 16, 16).softmax(-1)
    r = resize_attention(m, "self", 8)
    assert r.shape == (2, 64, 64) and torch.allclose(r.sum(-1), torch.ones(2, 64), atol=1e-5)
    c = resize_attention(torch.rand(2, 16, 7).softmax(-1), "cross", 8)
    assert c.shape == (2, 64, 7) and torch.allclose(c.sum(-1), torch.ones(2, 64), atol=1e-5)


def test_distillation_is_zero_for_the_teacher_and_carries_gradient_to_the_adapter(tiny_model):
    unet = tiny_model.unet
    spec = GraphSpec.from_dict({"factors": {"seg": {}}}).factors["seg"]
    adapter = build_factor_module(spec, unet)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 700])
    ctx = tiny_model.encode_text(["a dog", "a cat and a bus"])[0]
    sel = LayerSelector()
    # an untrained (zero-output) adapter is the teacher itself
    assert float(distillation_loss(spec, adapter, unet, x, t, ctx, sel).detach()) == pytest.approx(0.0, abs=1e-6)
    _perturb(adapter, 0.2)
    loss = distillation_loss(spec, adapter, unet, x, t, ctx, sel)
    assert float(loss.detach()) > 1e-6
    loss.backward()
    grads = [p.grad for p in adapter.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in unet.parameters())  # the base stays frozen
    # a detached student (the public code's bug) gives no gradient path at all
    teacher, student = AttentionStore(), AttentionStore(grad=False)
    with torch.no_grad(), attention_control(unet, sel, teacher):
        unet(x, t, encoder_hidden_states=ctx)
    with attention_control(unet, sel, student):
        factor_forward(spec, adapter, unet, x, t, ctx, None)
    assert not attention_distillation(teacher, student).requires_grad


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip_and_bad_graph_folders(graph, tmp_path, tiny_sd_dir):
    out = graph.save_pretrained(tmp_path / "g")
    spec = load_graph_spec(out)
    assert spec.base == str(tiny_sd_dir.resolve()) and spec.base_fingerprint == graph.base.fingerprint
    again = FactorGraphPipeline.from_pretrained(out)
    a, b = graph("a dog", seed=1), again("a dog", seed=1)
    assert all(torch.allclose(a.latents[k], b.latents[k], atol=1e-5) for k in a.latents)
    with pytest.raises(ValueError, match="already holds a graph"):
        graph.save_pretrained(tmp_path / "g")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no graph"):
        graph.save_pretrained(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    half = graph.save_pretrained(tmp_path / "half", fp16=True)
    assert FactorGraphPipeline.from_pretrained(half).modules["seg"].dtype == torch.float32  # loaded at the asked dtype
    assert main(["train", "assemble-graph", "--graph", str(out), "--out", str(tmp_path / "half"), "--overwrite"]) == 0
    # shipping a subset: the kept factors are byte-identical in behaviour; parents must come along
    assert main(["train", "assemble-graph", "--graph", str(out), "--factors", "seg,depth", "--out",
                 str(tmp_path / "sub"), "--fp32"]) == 0  # fmt: skip
    sub = FactorGraphPipeline.from_pretrained(tmp_path / "sub")
    assert list(sub.spec.factors) == ["seg", "depth"] and set(sub.spec.info.get("sources", {})) <= {"seg", "depth"}
    c = sub("a dog", seed=1)
    d = again("a dog", factors=["seg", "depth"], seed=1)
    assert all(torch.allclose(c.latents[k], d.latents[k], atol=1e-5) for k in ("seg", "depth"))
    with pytest.raises(ValueError, match="need their parents"):
        again.subset(["depth", "image"])
    # missing weights
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    shutil.rmtree(broken / "depth")
    with pytest.raises(ValueError, match="factor 'depth': missing weights"):
        FactorGraphPipeline.from_pretrained(broken)
    # a pickle checkpoint is refused, never unpickled
    shutil.copytree(out / "seg", broken / "depth")
    (broken / "depth" / "diffusion_pytorch_model.safetensors").unlink()
    (broken / "depth" / "diffusion_pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ValueError, match="pickle checkpoint"):
        FactorGraphPipeline.from_pretrained(broken)
    # shapes that do not agree with the declared parents
    bad = tmp_path / "shapes"
    shutil.copytree(out, bad)
    text = (bad / "graph.yaml").read_text().replace("parents:\n    - seg\n    size", "parents: []\n    size", 1)
    (bad / "graph.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"factor 'depth' .*input channels"):
        FactorGraphPipeline.from_pretrained(bad)
    # a graph trained on another base
    fp = tmp_path / "fp"
    shutil.copytree(out, fp)
    (fp / "graph.yaml").write_text((fp / "graph.yaml").read_text().replace(spec.base_fingerprint, "0" * 16))
    with pytest.raises(ValueError, match="only work on their own base"):
        FactorGraphPipeline.from_pretrained(fp)
    with pytest.raises(ValueError, match="does not exist"):
        FactorGraphPipeline.from_pretrained(tmp_path / "nothing")


# ----------------------------------------------------------------------------- training + CLI


def _write(tmp, name, extra, component="factor", steps=2):
    body = (f"component: {component}\noutput_dir: {tmp}/{name}\nsteps: {steps}\nbatch_size: 4\nlog_every: 1\n"
            f"checkpoint_every: 2\nema_decay: 0.9\nbase: {{model: {tmp}/base}}\n"
            "data: {n_scenes: 6, size: 64, holdout_n: 4, holdout_seed: 99}\noptim: {lr: 1.0e-3, warmup_steps: 1}\n"
            f"extra: {json.dumps(extra)}\n")  # fmt: skip
    p = tmp / f"{name}.yaml"
    p.write_text(body)
    return str(p)


def _digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_training_into_a_graph_and_continual_learning(tmp_path, tiny_sd_dir, capsys):
    import shutil

    shutil.copytree(tiny_sd_dir, tmp_path / "base")
    g = str(tmp_path / "graph")
    seg = _write(tmp_path, "seg", {"variable": "seg", "graph": g, "distill_every": 1, "sample": {"steps": 2},
                                   "sizes": [64, 72]})  # fmt: skip
    assert main(["train", "factor", "--config", seg, "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["factor"] == "seg" and metrics["distill_weight"] == 0.1 and "eval_mse_ratio" in metrics
    assert metrics["eval_attention_kl"] > 0  # the trained adapter's attention has left the base's
    rows = (tmp_path / "seg" / "loss.csv").read_text().splitlines()
    assert rows[0].endswith("distill") and len(rows) == 3
    assert {p.name for p in (tmp_path / "seg").glob("prerender-*")} == {"prerender-64.safetensors", "prerender-72.safetensors"}
    img = _write(tmp_path, "img", {"parents": ["seg"], "graph": g, "sample": {"steps": 2}}, component="image-factor")
    assert main(["train", "image-factor", "--config", img, "--quiet"]) == 0
    # a resumed run may re-install the factor it installed itself
    assert main(["train", "image-factor", "--config", img, "--quiet", "--resume", "--steps", "3"]) == 0
    before = {n: _digest(tmp_path / "graph" / n) for n in ("seg", "image")}
    capsys.readouterr()
    # continual learning: add a normals factor; only it trains, the others are untouched
    nrm = _write(tmp_path, "nrm", {"variable": "normal", "parents": ["seg"], "graph": g, "sample": {"steps": 2}})
    assert main(["train", "factor", "--config", nrm, "--quiet"]) == 0
    assert "eval_attention_kl" not in json.loads(capsys.readouterr().out)  # not a first, text-only factor
    assert {n: _digest(tmp_path / "graph" / n) for n in ("seg", "image")} == before
    pipe = FactorGraphPipeline.from_pretrained(g)
    assert pipe.spec.order == ["seg", "normal", "image"]
    out = pipe("a dog", factors=["seg", "normal"])
    assert set(out.maps) == {"seg", "normal"}
    # refusals: retraining an existing factor, a parent the graph lacks, the image via `factor`
    again = _write(tmp_path, "again", {"variable": "seg", "graph": g})
    assert main(["train", "factor", "--config", again, "--quiet"]) == 2
    assert "already has a 'seg' factor" in capsys.readouterr().err
    orphan = _write(tmp_path, "orphan", {"variable": "sketch", "parents": ["depth"], "graph": g})
    assert main(["train", "factor", "--config", orphan, "--quiet"]) == 2
    assert "no factors ['depth']" in capsys.readouterr().err
    wrong = _write(tmp_path, "wrong", {"variable": "image"})
    assert main(["train", "factor", "--config", wrong, "--quiet"]) == 2
    assert "train image-factor" in capsys.readouterr().err
    sizes = _write(tmp_path, "sizes", {"variable": "seg", "sizes": [60]})
    assert main(["train", "factor", "--config", sizes, "--quiet"]) == 2
    assert "extra.sizes" in capsys.readouterr().err
    typo = _write(tmp_path, "typo", {"variable": "seg", "distil_weight": 1})
    assert main(["train", "factor", "--config", typo, "--quiet"]) == 2
    assert "distil_weight" in capsys.readouterr().err


def test_a_factor_starts_from_trained_weights_new_blocks_as_the_identity(tmp_path, tiny_model, tiny_sd_dir, capsys):
    import shutil

    from fgdm.training.factors import init_factor_from

    unet = tiny_model.unet
    spec = GraphSpec.from_dict({"factors": {"seg": {}}}).factors["seg"]
    plain = _perturb(build_factor_module(spec, unet), 0.2)
    plain.save_pretrained(tmp_path / "plain", safe_serialization=True)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([50, 600])
    ctx = tiny_model.encode_text(["a dog", "a cat"])[0]
    text = build_factor_module(spec, unet, {"text_conditioned": True})
    init_factor_from(text, tmp_path / "plain")
    # the start reproduces the stored factor exactly; only then does the text path begin to learn
    assert torch.equal(factor_forward(spec, text, unet, x, t, ctx, None), factor_forward(spec, plain, unet, x, t, ctx, None))
    with pytest.raises(ValueError, match="no safetensors weights"):
        init_factor_from(text, tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"lacks .*scales.0.blocks.2"):  # a deeper adapter: new blocks are not identities
        init_factor_from(build_factor_module(spec, unet, {"blocks_per_scale": 3}), tmp_path / "plain")
    with pytest.raises(ValueError, match="shapes differ"):
        init_factor_from(build_factor_module(spec, unet, {"channels": [16, 16]}), tmp_path / "plain")
    _perturb(text).save_pretrained(tmp_path / "text", safe_serialization=True)
    with pytest.raises(ValueError, match=r"tensors this module lacks: .*text_attn"):
        init_factor_from(build_factor_module(spec, unet), tmp_path / "text")
    # through the trainer: a text-conditioned run from the plain weights, and a bad folder refused
    shutil.copytree(tiny_sd_dir, tmp_path / "base")
    cfg = _write(tmp_path, "cont", {"variable": "seg", "init_from": str(tmp_path / "plain")})
    with open(cfg, "a") as f:
        f.write("model: {text_conditioned: true}\n")
    assert main(["train", "factor", "--config", cfg, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == sum(p.numel() for p in text.parameters())
    bad = _write(tmp_path, "bad", {"variable": "seg", "init_from": str(tmp_path / "nowhere")})
    assert main(["train", "factor", "--config", bad, "--quiet"]) == 2
    assert "extra.init_from: no safetensors weights" in capsys.readouterr().err
    lone = _write(tmp_path, "lone", {"variable": "seg", "init_parents": ["seg"]})
    assert main(["train", "factor", "--config", lone, "--quiet"]) == 2
    assert "extra.init_parents must be a list of parent names beside extra.init_from" in capsys.readouterr().err


@pytest.mark.parametrize(("kind", "seg_input"), [("adapter", "latent"), ("scratch", "latent"), ("controlnet", "latent"),
                                               ("adapter", "classes"), ("scratch", "classes")])  # fmt: skip
def test_init_parents_adds_a_parent_whose_inputs_start_at_zero(tmp_path, tiny_model, kind, seg_input):
    """extra.init_parents: a factor trained with parents [seg] continues with [depth, seg] (a new
    parent first, so the stored inputs move): the start reproduces the stored factor with any depth
    given, and only training makes depth count. Parents that are not a subset, or weights that do
    not read the stated parents, are errors."""
    from fgdm.models.factors import pack_parents
    from fgdm.training.factors import init_factor_from

    unet = tiny_model.unet
    spec = lambda ps: GraphSpec.from_dict({"factors": {**{p: {} for p in ps}, "image": {
        "kind": kind, "parents": ps, "seg_input": seg_input}}}).factors["image"]  # fmt: skip
    old, new = spec(["seg"]), spec(["depth", "seg"])
    assert new.parent_widths() == [5, 5 if seg_input == "latent" else 91]
    stored = _perturb(build_factor_module(old, unet), 0.2)
    stored.save_pretrained(tmp_path / "old", safe_serialization=True)
    module = build_factor_module(new, unet)
    init_factor_from(module, tmp_path / "old", new, ["seg"])
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([50, 600])
    seg = torch.rand(2, new.parent_widths()[1] - 1, 8, 8, generator=g)  # a latent, or class shares
    depth = torch.randn(2, 4, 8, 8, generator=g)
    ctx = tiny_model.encode_text(["a dog", "a cat"])[0]
    want = factor_forward(old, stored, unet, x, t, ctx, pack_parents(("seg",), {"seg": seg}, x, old.parent_widths()))
    pack = lambda d: pack_parents(("depth", "seg"), {"seg": seg, "depth": d}, x, new.parent_widths())
    for d in (None, depth):
        got = factor_forward(new, module, unet, x, t, ctx, pack(d))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # once the depth inputs are trained (perturbed here), depth changes the output
    _perturb(module, 0.2, seed=1)
    a, b = (factor_forward(new, module, unet, x, t, ctx, pack(d)) for d in (None, depth))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match=r"init_parents \['normal'\] must be distinct parents"):
        init_factor_from(build_factor_module(new, unet), tmp_path / "old", new, ["normal"])
    with pytest.raises(ValueError, match=r"must be distinct parents .*; not: \['seg'\]"):
        init_factor_from(build_factor_module(new, unet), tmp_path / "old", new, ["seg", "seg"])
    with pytest.raises(ValueError, match=r"reads .* channels, \['seg', 'depth'\] give"):
        init_factor_from(build_factor_module(new, unet), tmp_path / "old", new, ["seg", "depth"])
    with pytest.raises(ValueError, match=r"set extra\.init_parents"):
        init_factor_from(build_factor_module(new, unet), tmp_path / "old")


def test_a_from_scratch_factor_can_start_as_the_base_unet(tiny_sd_dir, tiny_model):
    """configs/image_factor_fullft_cpu.yaml: a from-scratch image factor started from the base's own UNet
    folder with init_parents [] is the base UNet at the start, whatever its seg input; only training
    makes the map count."""
    from fgdm.models.factors import pack_parents
    from fgdm.training.factors import init_factor_from

    unet = tiny_model.unet
    spec = GraphSpec.from_dict({"factors": {"seg": {}, "image": {"kind": "scratch", "parents": ["seg"]}}}).factors["image"]
    module = build_factor_module(spec, unet)
    init_factor_from(module, tiny_sd_dir / "unet", spec, [])
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([50, 600])
    ctx = tiny_model.encode_text(["a dog", "a cat"])[0]
    want = unet(x, t, encoder_hidden_states=ctx).sample
    pack = lambda z: pack_parents(("seg",), {"seg": z}, x)
    seg = torch.randn(2, 4, 8, 8, generator=g)
    for z in (None, seg):
        torch.testing.assert_close(factor_forward(spec, module, unet, x, t, ctx, pack(z)), want, rtol=1e-5, atol=1e-5)
    _perturb(module, 0.2, seed=1)
    assert not torch.allclose(*(factor_forward(spec, module, unet, x, t, ctx, pack(z)) for z in (None, seg)))


def test_factor_runs_share_one_cache_and_installs_merge(tmp_path, tiny_sd_dir, capsys):
    """With extra.cache_dir, the first run pre-encodes every modality once and later runs reuse it;
    a factor installed from a stale view of the graph keeps the factors installed meanwhile."""
    import shutil

    from safetensors import safe_open

    from fgdm.models.factors import load_graph_spec
    from fgdm.training.factors import install_factor

    shutil.copytree(tiny_sd_dir, tmp_path / "base")
    cache, g = tmp_path / "cache", str(tmp_path / "graph")
    seg = _write(tmp_path, "seg", {"variable": "seg", "graph": g, "cache_dir": str(cache), "distill_weight": 0})
    assert main(["train", "factor", "--config", seg, "--quiet"]) == 0
    f = cache / "prerender-64.safetensors"
    with safe_open(str(f), "pt") as h:
        assert {k for k in h.keys() if k.startswith("lat_")} == {f"lat_{m}" for m in ("image", "seg", "depth", "normal", "sketch")}  # noqa: SIM118
    stamp = f.stat().st_mtime_ns
    depth = _write(tmp_path, "depth", {"variable": "depth", "parents": ["seg"], "graph": g, "cache_dir": str(cache)})
    assert main(["train", "factor", "--config", depth, "--quiet"]) == 0
    assert f.stat().st_mtime_ns == stamp and not list((tmp_path / "depth").glob("prerender-*"))
    capsys.readouterr()
    stale = load_graph_spec(g)  # as a run that started before depth was installed would see it...
    stale.factors.pop("depth")
    install_factor(tmp_path / "graph", stale, "seg", tmp_path / "seg" / "final")  # ...re-installing seg
    assert list(load_graph_spec(g).factors) == ["seg", "depth"]


def test_factors_trained_side_by_side_wait_for_their_parents(tmp_path, tiny_sd_dir, capsys):
    """extra.wait_for_parents: a child may train before its parents are in the graph; it joins the
    graph once they have (in any order), or fails after the wait naming them, its weights kept, and
    a resumed run installs it. Without the setting it is refused before training, as before."""
    import shutil
    import threading

    from fgdm.models.factors import load_graph_spec
    from fgdm.training.factors import install_factor

    shutil.copytree(tiny_sd_dir, tmp_path / "base")
    g = tmp_path / "graph"
    depth = _write(tmp_path, "depth", {"variable": "depth", "parents": ["seg"], "graph": str(g)})
    assert main(["train", "factor", "--config", depth, "--quiet"]) == 2
    assert "train the parents ['seg'] into it first (or set extra.wait_for_parents)" in capsys.readouterr().err
    depth = _write(tmp_path, "depth", {"variable": "depth", "parents": ["seg"], "graph": str(g), "wait_for_parents": 0.005})
    assert main(["train", "factor", "--config", depth, "--quiet"]) == 2  # trained; seg never came
    assert "still has no factors ['seg'] for 'depth'" in capsys.readouterr().err
    assert (tmp_path / "depth" / "final").is_dir() and not (g / "graph.yaml").exists()
    seg = _write(tmp_path, "seg", {"variable": "seg", "graph": str(g), "distill_weight": 0})
    assert main(["train", "factor", "--config", seg, "--quiet"]) == 0
    assert main(["train", "factor", "--config", depth, "--quiet", "--resume", "--steps", "3"]) == 0
    assert list(load_graph_spec(g).factors) == ["seg", "depth"]
    capsys.readouterr()
    # the install itself: a child that finishes first waits, then merges into what its parent wrote
    g2 = tmp_path / "graph2"
    spec = load_graph_spec(g)
    child = threading.Thread(target=install_factor, args=(g2, spec, "depth", tmp_path / "depth" / "final"),
                             kwargs={"wait_s": 30, "poll_s": 0.05})  # fmt: skip
    child.start()
    child.join(timeout=0.5)
    assert child.is_alive() and not (g2 / "depth").exists()
    only_seg = load_graph_spec(g)
    only_seg.factors.pop("depth")
    install_factor(g2, only_seg, "seg", tmp_path / "seg" / "final")
    child.join(timeout=30)
    assert not child.is_alive() and list(load_graph_spec(g2).factors) == ["seg", "depth"]
    bad = _write(tmp_path, "bad", {"variable": "seg", "graph": str(tmp_path / "g3"), "wait_for_parents": -1})
    assert main(["train", "factor", "--config", bad, "--quiet"]) == 2
    assert "wait_for_parents must be a number of minutes >= 0" in capsys.readouterr().err


def test_a_run_resumed_in_a_moved_checkout_may_reinstall_its_factor(tmp_path, tiny_sd_dir, capsys, monkeypatch):
    """A graph records each factor's run folder as an absolute path; a later session's checkout
    may sit elsewhere (another machine), and the same relative run folder is still that run."""
    import shutil
    from pathlib import Path

    import yaml

    from fgdm.training.factors import _same_run

    assert _same_run("/a/repo/runs/train/factor_seg", "runs/train/factor_seg")
    assert not _same_run("/a/repo/runs/train/factor_seg_cpu", "runs/train/factor_seg")
    assert not _same_run("/a/repo/runs/train/factor_seg", "/b/repo/runs/train/factor_seg")
    assert not _same_run(None, "runs/train/factor_seg")
    shutil.copytree(tiny_sd_dir, tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    seg = Path(_write(tmp_path, "seg", {"variable": "seg", "graph": "graph", "distill_weight": 0}))
    seg.write_text(seg.read_text().replace(f"output_dir: {tmp_path}/seg", "output_dir: runs/seg"))
    assert main(["train", "factor", "--config", str(seg), "--quiet"]) == 0
    spec = yaml.safe_load((tmp_path / "graph" / "graph.yaml").read_text())
    assert spec["info"]["sources"]["seg"] == str(tmp_path / "runs" / "seg")
    spec["info"]["sources"]["seg"] = "/another/machine/repo/runs/seg"  # as a device session wrote it
    (tmp_path / "graph" / "graph.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["train", "factor", "--config", str(seg), "--quiet", "--resume", "--steps", "3"]) == 0
    other = Path(_write(tmp_path, "other", {"variable": "seg", "graph": "graph"}))
    assert main(["train", "factor", "--config", str(other), "--quiet"]) == 2
    assert "already has a 'seg' factor" in capsys.readouterr().err


def test_generate_with_factors_writes_maps_classes_and_record(graph, tmp_path, capsys):
    g = graph.save_pretrained(tmp_path / "g")
    out = tmp_path / "run"
    argv = ["generate", "a dog and a cat", "--factors", "seg,image", "--graph", str(g), "--n", "2", "--cond-steps",
            "2", "--steps", "2", "-o", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    rec = json.loads((out / "record.json").read_text())
    assert rec["kind"] == "generate-fgdm" and rec["parameters"]["factors"] == ["seg", "image"]
    assert rec["parameters"]["per_factor"]["seg"]["steps"] == 2 and rec["parameters"]["per_factor"]["image"]["steps"] == 2
    assert {"image-000.png", "image-001.png", "seg-000.png", "seg-001.png"} <= set(rec["files"])
    assert all((out / f).exists() for f in rec["files"])
    assert all(isinstance(s["seg_objects"], list) and 0 <= s["seg_palette_fit"] <= 1 for s in rec["samples"])
    # each map's recall of the prompt's objects; maps that miss some are named on stderr, with the remedy
    for s in rec["samples"]:
        assert s["seg_object_recall"] == len({"dog", "cat"} & set(s["seg_objects"])) / 2
    err = capsys.readouterr().err
    short = [s["seed"] for s in rec["samples"] if s["seg_object_recall"] < 1]
    assert all(f"seed {sd}: " in err for sd in short) and ("--sbpc N" in err) == bool(short)
    assert {"factor_seg_s", "factor_image_s"} <= set(rec["timings"])
    # --batch-size splits --n into calls; every sample keeps its seed and comes out the same
    assert main([*argv[:-3], "-o", str(tmp_path / "split"), "--batch-size", "1", "--quiet"]) == 0
    split = json.loads((tmp_path / "split" / "record.json").read_text())
    assert split["seeds"] == rec["seeds"] == [0, 1] and split["parameters"]["batch_size"] == 1
    assert [s["seg_objects"] for s in split["samples"]] == [s["seg_objects"] for s in rec["samples"]]
    from PIL import Image

    a, b = (np.asarray(Image.open(d / "image-001.png"), dtype=int) for d in (out, tmp_path / "split"))
    assert np.abs(a - b).max() <= 2
    # the seg map is re-painted with the palette: batched float rounding may flip a boundary pixel's class
    a, b = (np.asarray(Image.open(d / "seg-001.png"), dtype=int) for d in (out, tmp_path / "split"))
    assert (a != b).any(axis=-1).mean() <= 0.01
    assert [rec["parameters"]["per_factor"][f]["eta"] for f in ("seg", "image")] == [0.0, 0.0]  # the graph's
    assert main([*argv[:-3], "-o", str(tmp_path / "run2"), "--factors", "depth,image", "--eta", "1", "--quiet"]) == 0
    assert (tmp_path / "run2" / "depth-000.png").exists()
    two = json.loads((tmp_path / "run2" / "record.json").read_text())["parameters"]
    assert two["eta"] == 1 and [two["per_factor"][f]["eta"] for f in ("depth", "image")] == [1, 1]
    capsys.readouterr()
    assert main(["generate", "a dog", "--factors", "seg,pose", "--graph", str(g), "-o", str(tmp_path / "x")]) == 2
    assert "not in the graph" in capsys.readouterr().err
    assert main(["generate", "a dog", "--mode", "joint", "-o", str(tmp_path / "y")]) == 2
    assert "pass --factors" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ----------------------------------------------------------------------------- inversion


def test_ddim_inversion_round_trip_on_the_tiny_unet(tiny_model):
    from fgdm.sampling import invert_ddim

    unet = tiny_model.unet
    ctx = tiny_model.encode_text(["a dog"])[0]
    sched = ddim_schedule(tiny_model.scheduler.config, 50)

    def den(x, t):
        return unet(x, t, encoder_hidden_states=ctx).sample

    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    rec = sample_ddim(den, invert_ddim(den, x0, sched), sched)
    other = sample_ddim(den, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)), sched)
    err, base = (rec - x0).pow(2).mean(), (other - x0).pow(2).mean()
    assert err < 0.05 * base


def test_pipeline_inverts_a_map_and_regenerates_it(graph):
    seg = np.full((32, 32), 80, np.uint8)
    seg[8:24, 6:20] = 16
    z = graph.encode_value("seg", seg, 32)
    xt = graph.invert("seg", seg, "a dog on the grass", steps=30)
    out = graph("a dog on the grass", factors=["seg"], init_latents={"seg": xt}, steps={"seg": 30},
                guidance={"seg": 1.0})  # fmt: skip
    fresh = graph("a dog on the grass", factors=["seg"], steps={"seg": 30}, guidance={"seg": 1.0})
    assert (out.latents["seg"] - z).pow(2).mean() < 0.1 * (fresh.latents["seg"] - z).pow(2).mean()
    with pytest.raises(ValueError, match="init_latents"):
        graph("a dog", factors=["seg"], init_latents={"seg": xt}, sizes={"seg": 16})
    with pytest.raises(ValueError, match="image must be RGB"):
        graph.encode_value("image", np.zeros((8, 8)), 32)


def test_invert_path_and_keep_regenerate_only_a_region(graph):
    seg = np.full((32, 32), 80, np.uint8)
    seg[8:24, 6:20] = 16
    path = graph.invert_path("seg", seg, "a dog on the grass", steps=6)
    assert len(path) == 7 and torch.equal(path[-1], graph.encode_value("seg", seg, 32))
    assert torch.equal(path[0], graph.invert("seg", seg, "a dog on the grass", steps=6))
    region = np.zeros((32, 32), bool)
    region[:, :12] = True  # on the 8x8 latent grid (4 pixels a cell): columns 0-2 free
    out = graph("a cat on the grass", factors=["seg"], init_latents={"seg": path[0]}, steps={"seg": 6},
                keep={"seg": (region, path)})  # fmt: skip
    z = out.latents["seg"]
    assert torch.equal(z[..., 3:], path[-1][..., 3:].to(z)) and not torch.allclose(z[..., :3], path[-1][..., :3].to(z))
    none = graph("a cat", factors=["seg"], init_latents={"seg": path[0]}, steps={"seg": 6},
                 keep={"seg": (np.zeros((32, 32), bool), path)})  # fmt: skip
    assert torch.equal(none.latents["seg"], path[-1].to(z))  # nothing free: the inverted map itself
    with pytest.raises(ValueError, match="keep: \\['image'\\] are not among the sampled factors"):
        graph("a cat", factors=["seg"], keep={"image": (region, path)})
    with pytest.raises(ValueError, match="must be a \\(H, W\\) bool array"):
        graph("a cat", factors=["seg"], steps={"seg": 6}, keep={"seg": (region.astype(int), path)})
    with pytest.raises(ValueError, match="a schedule of 25 steps needs 26"):
        graph("a cat", factors=["seg"], steps={"seg": 25}, keep={"seg": (region, path)})


def test_latent_mask_frees_every_cell_a_pixel_touches():
    from fgdm.pipelines.factor_graph import latent_mask

    m = np.zeros((32, 32), bool)
    m[5, 9] = True  # one pixel, in cell (1, 2) of an 8x8 grid
    got = latent_mask(m, 8)
    assert got.shape == (1, 1, 8, 8) and got.sum() == 1 and got[0, 0, 1, 2] == 1
    assert latent_mask(np.ones((4, 4), bool), 8).sum() == 64  # a coarser mask is upsampled


def test_factor_heldout_script(random_graph, tmp_path, capsys, monkeypatch):
    """scripts/factor_heldout.py (the distillation ablation in results.md): one row per graph on the
    same held-out latents; an untouched (zero-initialised) adapter's attention KL to the base is 0."""
    import runpy
    from pathlib import Path

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "factor_heldout.py")
    spec = {"factors": {"seg": {"steps": 2}}}
    same = random_graph(spec, scale=0.0).save_pretrained(tmp_path / "same")
    moved = random_graph(spec, scale=0.05).save_pretrained(tmp_path / "moved")
    monkeypatch.setattr("sys.argv", ["x", "--graph", str(same), str(moved), "--n", "4", "--size", "64", "--kl-n", "2"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["graph"] for r in rows] == [str(same), str(moved)] and all(r["eval_n"] == 4 for r in rows)
    assert rows[0]["eval_attention_kl"] == pytest.approx(0.0, abs=1e-6) and rows[1]["eval_attention_kl"] > 1e-4
    assert rows[0]["eval_mse_ratio"] == pytest.approx(1.0, abs=1e-3)  # the zero adapter is the base
    for argv, err in ((["--graph", str(same), "--factor", "depth"], "no factor 'depth'"),
                      (["--graph", str(tmp_path / "missing")], "does not exist"),
                      (["--graph", str(same), "--kl-n", "-1"], "--kl-n must be >= 0"),
                      (["--graph", str(same), "--size", "48"], "--size must be >= 64")):  # fmt: skip
        monkeypatch.setattr("sys.argv", ["x", *argv])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 2 and err in capsys.readouterr().err


def test_bench_factors_reports_every_ratio(tiny_sd_dir, capsys):
    assert main(["bench", "factors", "--model", str(tiny_sd_dir), "--batch", "2", "--distill-batch", "2", "--steps", "2",
                 "--n", "1", "--sample-batch", "3", "--json"]) == 0  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    t = r["train_step"]
    assert t["seconds_per_step"] > 0 and t["distillation_step_ratio"] > 0 and t["distill_batch"] == 2
    assert t["amortised_ratio"] == pytest.approx(1 + (t["distillation_step_ratio"] - 1) / 10, abs=1e-3)
    for kind in ("controlnet", "adapter"):
        s = r["sampling"][kind]
        assert s["sample_batch"] == 3 and s["seconds_per_sample_joint_batched"] > 0 and s["batch_speedup"] > 0
        assert s["image_factor_parameters"] > 0 and s["joint_over_ancestral"] > 0
    assert r["seg_adapter_parameters"] > 0 and r["steps"] == 2


def test_null_prob_per_parent_drops_each_parent_at_its_own_rate(tmp_path, tiny_model, tiny_sd_dir, capsys):
    """extra.null_prob as a mapping: a parent dropped always (1.0) never reaches the factor, so its
    input weights get no gradient and stay exactly as stored, while the other parent's train."""
    import shutil

    from safetensors.torch import load_file

    from fgdm.training.factors import null_probs

    assert null_probs(0.3, ("seg", "depth")) == {"seg": 0.3, "depth": 0.3}
    assert null_probs({"depth": 0.5}, ("seg", "depth")) == {"seg": 0.2, "depth": 0.5}
    with pytest.raises(ValueError, match=r"names \['sketch'\], which are not this factor's parents"):
        null_probs({"sketch": 0.5}, ("seg", "depth"))
    with pytest.raises(ValueError, match=r"null_prob\['depth'\] must be a probability in \[0, 1\], got 2"):
        null_probs({"depth": 2}, ("seg", "depth"))
    with pytest.raises(ValueError, match="null_prob must be a probability"):
        null_probs("half", ("seg",))
    shutil.copytree(tiny_sd_dir, tmp_path / "base")
    spec = GraphSpec.from_dict({"factors": {"seg": {}, "depth": {}, "normal": {"kind": "scratch", "parents": ["seg", "depth"]}}})
    stored = _perturb(build_factor_module(spec.factors["normal"], tiny_model.unet), 0.1)
    stored.save_pretrained(tmp_path / "start", safe_serialization=True)
    extra = {"variable": "normal", "kind": "scratch", "parents": ["seg", "depth"], "init_from": str(tmp_path / "start"),
             "null_prob": {"seg": 0.0, "depth": 1.0}}  # fmt: skip
    (tmp_path / "np.yaml").write_text(
        f"component: factor\noutput_dir: {tmp_path}/np\nsteps: 3\nbatch_size: 4\nlog_every: 1\ncheckpoint_every: 3\n"
        f"ema_decay: 0.5\nbase: {{model: {tmp_path}/base}}\ncheckpoint_dtype: float32\n"
        "data: {n_scenes: 6, size: 64, holdout_n: 4, holdout_seed: 99}\n"
        f"optim: {{lr: 1.0e-2, warmup_steps: 1, weight_decay: 0.0}}\nextra: {json.dumps(extra)}\n")  # fmt: skip
    assert main(["train", "factor", "--config", str(tmp_path / "np.yaml"), "--quiet"]) == 0
    capsys.readouterr()
    key = "conv_in.weight"
    before = stored.state_dict()[key]
    after = next(load_file(f)[key] for f in (tmp_path / "np" / "final").glob("*.safetensors")).to(before.dtype)
    # conv_in reads [noisy latent 4 | seg 4 + presence | depth 4 + presence]
    assert torch.equal(after[:, 9:], before[:, 9:])  # depth: always null, untouched
    assert not torch.allclose(after[:, 4:9], before[:, 4:9])  # seg: always given, trained


# ----------------------------------------------------------------------------- seg_input: classes


def test_class_fractions_are_each_cells_class_shares():
    from fgdm.models.factors import NUM_CLASSES, class_fractions

    lab = torch.full((1, 4, 4), 255)
    lab[0, :2, :2] = 3  # the top-left cell, whole
    lab[0, 3, 3] = 7  # a quarter of the bottom-right cell; the rest void
    f = class_fractions(lab, (2, 2))
    assert f.shape == (1, NUM_CLASSES, 2, 2)
    assert f[0, 3, 0, 0] == 1 and f[0, 7, 1, 1] == 0.25 and f.sum() == 1.25  # void counts for no class
    fine = class_fractions(lab, (8, 8))  # a finer grid repeats the pixels
    assert torch.equal(fine[0, 3], torch.kron((lab[0] == 3).float(), torch.ones(2, 2)))
    rand = torch.randint(0, NUM_CLASSES + 5, (3, 12, 12), generator=torch.Generator().manual_seed(0))
    pooled = torch.nn.functional.adaptive_avg_pool2d(
        torch.nn.functional.one_hot(rand, NUM_CLASSES + 5)[..., :NUM_CLASSES].permute(0, 3, 1, 2).float(), (4, 4))
    torch.testing.assert_close(class_fractions(rand, (4, 4)), pooled)  # the counting path = pooling a one-hot
    assert class_fractions(rand, (5, 5)).sum(1).max() <= 1 + 1e-6  # a grid that does not divide: shares still
    with pytest.raises(ValueError, match=r"labels must be \(B, H, W\) class ids, got shape \(4, 4\)"):
        class_fractions(lab[0], (2, 2))
    with pytest.raises(ValueError, match="parent 'seg' has 4 channels, the factor reads 90"):
        pack_parents(("seg",), {"seg": torch.zeros(1, 4, 2, 2)}, torch.zeros(1, 4, 2, 2), [91])


def test_a_factor_that_reads_classes_gets_its_maps_class_shares(random_graph, monkeypatch, tmp_path):
    """seg_input: classes — the image factor's seg input is the map's class shares per latent cell: a
    given map's from its exact class ids (no VAE round trip; in sampling and in inversion), a jointly
    sampled map's from its decoded estimate at every step; the graph file names it, and a graph that
    reads latents is written as before."""
    from fgdm.models.factors import class_fractions
    from fgdm.world.conditions import encode_segmentation

    graph = random_graph({"factors": {"seg": {"steps": 3}, "image": {"kind": "adapter", "parents": ["seg"],
                                                                      "seg_input": "classes", "steps": 3}}})  # fmt: skip
    assert graph.modules["image"].config.in_channels == 91
    assert graph.spec.to_dict()["factors"]["image"]["seg_input"] == "classes"
    assert "seg_input" not in graph.spec.to_dict()["factors"]["seg"]
    saved = graph.save_pretrained(tmp_path / "g")
    assert FactorGraphPipeline.from_pretrained(saved).spec.factors["image"].reads_classes
    yaml_file = saved / "graph.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("seg_input: classes", "seg_input: latent"))
    with pytest.raises(ValueError, match=r"takes 91 input channels, its parents \['seg'\] give 5"):
        FactorGraphPipeline.from_pretrained(saved)
    seg = np.full((32, 32), 255, np.uint8)
    seg[8:24, 8:24] = 16  # a dog
    decoded = []
    real_decode = graph.decode_maps

    def decode(name, latents):  # the tiny random VAE cannot round-trip a map: decode to the given one
        decoded.append(len(latents))
        rgbs, _, fits = real_decode(name, latents)
        return rgbs, [seg] * len(latents), fits

    monkeypatch.setattr(graph, "decode_maps", decode)
    seen = []
    hook = graph.modules["image"].register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    want = class_fractions(torch.from_numpy(seg)[None], (8, 8))
    assert want[0, 16].mean() == 0.25  # the dog's share of the image
    for given in (seg, encode_segmentation(seg), [seg, seg]):  # class ids, a palette image, one per prompt
        prompts = "a dog" if not isinstance(given, list) else ["a dog", "a dog"]
        out = graph(prompts, factors=["image"], given={"seg": given}, guidance={"image": 1.0})
        assert decoded == []  # read exactly, and returned as given: never decoded back from the latent
        assert all(np.array_equal(lab, seg) for lab in out.labels) and len(out.labels) == len(out.images)
        assert all(np.array_equal(m, encode_segmentation(seg)) for m in out.maps["seg"]) and out.palette_fit is None
        assert len(seen) == 3 and all(torch.equal(x[:, :90], want.expand(len(x), -1, -1, -1)) for x in seen)
        assert all(torch.all(x[:, 90] == 1) for x in seen)
        seen.clear(), decoded.clear()
    graph.invert_path("image", np.zeros((32, 32, 3), np.uint8), "a dog", given={"seg": seg}, steps=2)
    assert decoded == [] and all(torch.equal(x[:, :90], want) for x in seen)
    seen.clear()
    out = graph("a dog", seed=1)  # joint: the seg estimate changes at every step, and is read each time
    hook.remove()
    assert len(seen) == 3 and len(decoded) == 3 + 1  # + the final map's decoding
    assert out.sampled == ["seg", "image"] and len(out.images) == 1


def test_training_a_factor_that_reads_classes(tmp_path, tiny_sd_dir, capsys):
    """extra.seg_input: classes trains on the seg maps' class ids (cached beside the latents) and joins
    the graph reading classes; a bad value is a clear error."""
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(tiny_sd_dir, tmp_path / "base")
    cfg = _write(tmp_path, "cls", {"parents": ["seg"], "kind": "adapter", "seg_input": "classes"}, component="image-factor")
    assert main(["train", "image-factor", "--config", cfg, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_mse_ratio"] > 0
    cache = load_file(str(tmp_path / "cls" / "prerender-64-labels.safetensors"))
    assert cache["labels"].dtype == torch.uint8 and cache["labels"].shape == (6, 64, 64)
    assert set(np.unique(cache["labels"].numpy())) - {255} and "lat_seg" in cache  # classes beside the latents
    assert json.loads((tmp_path / "cls" / "final" / "config.json").read_text())["in_channels"] == 91
    bad = _write(tmp_path, "bad", {"parents": ["seg"], "seg_input": "palette"}, component="image-factor")
    assert main(["train", "image-factor", "--config", bad, "--quiet"]) == 2
    assert "seg_input must be one of ['latent', 'classes'], got 'palette'" in capsys.readouterr().err

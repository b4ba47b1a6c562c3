"""Training FG-DM factors on a frozen base: ``fgdm train factor`` / ``fgdm train image-factor``.

Settings (``extra:`` in the YAML):
- ``variable``: seg | depth | normal | sketch | image (``image-factor``: image only).
- ``parents``: the variables it is conditioned on (default none; ``image-factor``: [seg]).
- ``kind``: adapter (default for conditions) | controlnet (default for the image) | scratch.
- ``null_prob`` (0.2): each parent is replaced by the null condition with this probability; a
  mapping sets it per parent (e.g. ``{seg: 0.2, depth: 0.5}``, unnamed parents 0.2), so a parent
  added later can be dropped more often and the factor keeps working well without it.
- ``caption_dropout`` (0.1), ``min_snr_gamma`` (5.0; None = plain MSE).
- ``seg_input``: ``latent`` (default) or ``classes``: the seg parent enters as its map's class shares
  per latent cell (one channel per class) instead of its VAE latent, so the factor reads the
  objects' classes from the map itself; the pre-encoded data then also holds the seg label maps.
- ``grounding``: TokenCompose's grounding losses (:mod:`fgdm.losses.grounding`) on the cross-attention
  of the UNet the factor drives, each class word's attention pulled into its class's region of the
  sample's seg map: a mapping ``{token: W_TOKEN, pixel: W_PIXEL, blocks: [mid, up]}`` (TokenCompose's public
  code: 1e-3 and 5e-5, mid and decoder blocks; here each loss is averaged over the layers, not
  summed). Off when unset. The pre-encoded data then also holds the seg label maps and each
  caption's token classes (``BaseModel.token_class_ids``); rows whose caption was dropped are not
  grounded. For the image factor this teaches the map's regions to call up their class words.
- ``distill_weight`` (0.1; 0 = off): attention distillation, only for a parentless adapter factor,
  every ``distill_every`` (10) steps on the first ``distill_batch`` (8) samples of the batch;
  ``distill_size`` (default: the largest attention resolution, as in the paper) is the common
  map size (a smaller one makes the self-attention KL much cheaper).
- ``graph``: a graph directory; the trained factor is added to it (created if missing). Other
  factors in it are never touched (continual learning); replacing an existing factor of the same
  name needs ``replace: true``. A factor's parents must be in the graph before it trains, unless
  ``wait_for_parents`` (minutes, default 0) is set: then they may be training at the same time
  (their runs train on real maps, not on each other), and the finished factor waits up to that
  long for them to be installed before it joins the graph (``scripts/device_stage.sh factors``).
- ``sizes``: render sizes to train at (default ``[data.size]``); batches alternate between them
  (e.g. ``[128, 64]`` so the seg factor also samples well at quarter area, as SBPC does).
- ``sample``: the node's sampling defaults in the graph (``size``, ``steps``, ``guidance``,
  ``cond_guidance``, ``eta``).
- ``init_from``: a trained factor's weights folder (safetensors) to start from instead of a fresh
  module, e.g. a graph's ``seg/`` to train it further with another recipe. Every tensor of it must
  fit the new module; the new module may have tensors it lacks only where they start as the
  identity (a text-conditioned adapter's cross-attention blocks on a plain adapter's weights).
- ``init_parents``: the parents the ``init_from`` weights were trained with (default: this run's
  ``parents``). They must be a subset of ``parents``; the input weights of each one are moved to its
  place in the new packing and those of a new parent start at zero, so the start reproduces the
  stored factor and a new condition (e.g. depth beside seg for the image factor) is learnt from there.
- ``cache_dir``: where the pre-encoded training data is cached. Set, the cache holds every
  modality (image and the four conditions) and is shared by all factor runs on the same data and
  base (the first run pays for it); unset, each run caches only what it needs in its output_dir.
``base.model``: the base SD directory (default: the shipped MiniSD). ``model:``: module options
(adapter ``channels``, ``blocks_per_scale``, ``time_conditioned``, ``text_conditioned``; controlnet
``embedding_channels``; scratch: UNet config overrides).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
from pathlib import Path

import torch

from ..attention import AttentionStore, LayerSelector, attention_control
from ..losses import attention_distillation, grounding_losses
from ..models.factors import (
    LATENT_CHANNELS,
    VARIABLES,
    FactorSpec,
    GraphSpec,
    build_factor_module,
    class_fractions,
    factor_forward,
    load_graph_spec,
    save_graph_spec,
)
from ..models.pipeline import load_base_model
from ..pipelines.factor_graph import base_reference
from ..sampling import to_epsilon
from ..world.dataset import CONDITIONS
from .components import (
    SHARD,
    _write_metrics,
    base_noise_scheduler,
    cached_prerender,
    min_snr_mse,
    prerender,
    training_target,
)
from .config import TrainConfig
from .loop import train, training_device

log = logging.getLogger(__name__)


def factor_spec(cfg: TrainConfig) -> FactorSpec:
    """The factor a config trains, validated (unknown ``extra`` keys were refused by its TrainConfig)."""
    ex = cfg.extra
    image = cfg.component == "image-factor"
    var = ex.get("variable", "image" if image else None)
    if var not in VARIABLES:
        raise ValueError(f"extra.variable must be one of {list(VARIABLES)}, got {var!r}")
    if image and var != "image":
        raise ValueError(f"image-factor trains the image; extra.variable must be 'image', got {var!r}")
    if not image and var == "image":
        raise ValueError("the image factor is trained with `fgdm train image-factor`")
    parents = tuple(ex.get("parents", ["seg"] if image else []))
    kind = ex.get("kind", "controlnet" if image else "adapter")
    sample = dict(ex.get("sample") or {})
    if "seg_input" in ex:
        sample["seg_input"] = ex["seg_input"]
    d = {"factors": {**{p: {} for p in parents}, var: {"kind": kind, "parents": list(parents), **sample}}}
    return GraphSpec.from_dict(d, where="extra").factors[var]


def _same_run(stored: str | None, output_dir: str) -> bool:
    """Whether the run recorded as ``stored`` (an absolute output_dir) is this one: the same
    folder, or the same relative run folder in a checkout that has moved (another machine)."""
    if not stored:
        return False
    here = Path(output_dir)
    if stored == str(here.resolve()):
        return True
    return not here.is_absolute() and Path(stored).parts[-len(here.parts) :] == here.parts


def _graph_with(graph_dir: Path | None, spec: FactorSpec, base, replace: bool, output_dir: str,
                pending: bool = False) -> GraphSpec | None:  # fmt: skip
    """The graph the new factor will join, validated *before* training starts.

    The run's ``output_dir`` (resolved) is recorded in the graph's ``info.sources``; a run may
    replace the factor it installed itself (a resumed run, also in a moved checkout: the same
    relative run folder), any other only with ``replace``.
    ``pending``: parents not in the graph yet are being trained beside this run (placeholders
    stand in for them here; :func:`install_factor` waits for them).
    """
    if graph_dir is None:
        return None
    info: dict = {}
    if (graph_dir / "graph.yaml").exists():
        g = load_graph_spec(graph_dir)
        if g.base_fingerprint and g.base_fingerprint != base.fingerprint:
            raise ValueError(f"extra.graph {str(graph_dir)!r} was trained on base {g.base_fingerprint}, "
                             f"this run's base is {base.fingerprint}")  # fmt: skip
        info = dict(g.info)
        own = _same_run(info.get("sources", {}).get(spec.name), output_dir)
        if spec.name in g.factors and not (replace or own):
            raise ValueError(f"extra.graph {str(graph_dir)!r} already has a {spec.name!r} factor; "
                             "set extra.replace: true to retrain it")  # fmt: skip
        missing = [p for p in spec.parents if p not in g.factors]
        if missing and not pending:
            raise ValueError(f"extra.graph {str(graph_dir)!r} has no factors {missing} for {spec.name!r} to condition on")
        factors = {p: {} for p in missing} | {n: s.to_dict() for n, s in g.factors.items()}
    elif graph_dir.exists() and any(not f.name.startswith(".") for f in graph_dir.iterdir()):  # .lock: a waiting run's
        raise ValueError(f"extra.graph {str(graph_dir)!r} is not empty and holds no graph.yaml")
    else:
        factors = {p: {} for p in spec.parents}  # placeholders, checked below; parents must be trained first
        if spec.parents and not pending:
            raise ValueError(f"extra.graph {str(graph_dir)!r} does not exist yet; train the parents "
                             f"{list(spec.parents)} into it first (or set extra.wait_for_parents)")  # fmt: skip
    factors[spec.name] = spec.to_dict()
    info["sources"] = {**info.get("sources", {}), spec.name: str(Path(output_dir).resolve())}
    return GraphSpec.from_dict({"factors": factors, "base": base_reference(base.path), "base_fingerprint": base.fingerprint,
                                "info": info}, where=f"extra.graph {str(graph_dir)!r}")  # fmt: skip


def install_factor(graph_dir: Path, graph: GraphSpec, name: str, folder: Path, wait_s: float = 0.0,
                   poll_s: float = 5.0) -> None:  # fmt: skip
    """Copy a trained factor into a graph directory and add its node; other factors are untouched.

    The node is merged into the graph as it is *now* (under a lock), so factors trained at the
    same time into one graph all end up in it. With ``wait_s``, a factor whose parents are not in
    the graph yet checks again every ``poll_s`` seconds until they are, or fails after ``wait_s``
    naming them (its weights stay in ``folder``; a resumed run installs them)."""
    import fcntl
    import time

    graph_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    parents = graph.factors[name].parents
    while True:
        with open(graph_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            have = load_graph_spec(graph_dir).factors if (graph_dir / "graph.yaml").exists() else {}
            missing = [p for p in parents if p not in have]
            if not missing:
                return _install_locked(graph_dir, graph, name, folder)
        if time.monotonic() >= deadline:
            raise ValueError(f"extra.graph {str(graph_dir)!r} still has no factors {missing} for {name!r} to condition "
                             f"on after {wait_s:.0f} s; its weights are in {str(folder)!r}")  # fmt: skip
        log.info("waiting for %s to join %s before %s can", missing, graph_dir, name)
        time.sleep(poll_s)


def _install_locked(graph_dir: Path, graph: GraphSpec, name: str, folder: Path) -> None:
    """:func:`install_factor`'s work, with the graph's lock held and the parents present."""
    stage = graph_dir / f".{name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(folder, stage)
    if (graph_dir / name).exists():
        shutil.rmtree(graph_dir / name)
    stage.rename(graph_dir / name)
    if (graph_dir / "graph.yaml").exists():
        now = load_graph_spec(graph_dir)
        sources = {**now.info.get("sources", {}), name: graph.info.get("sources", {}).get(name)}
        factors = {n: s.to_dict() for n, s in now.factors.items()}
        factors[name] = graph.factors[name].to_dict()
        graph = GraphSpec.from_dict({"factors": factors, "base": graph.base, "base_fingerprint": graph.base_fingerprint,
                                     "info": {**now.info, "sources": sources}}, where=str(graph_dir))  # fmt: skip
    save_graph_spec(graph, graph_dir)


def parent_value(spec: FactorSpec, parent: str, data: dict, size) -> torch.Tensor:
    """A parent's input to the factor from pre-encoded ``data``: its latent, or for a factor with
    ``seg_input: classes`` the seg map's class shares on the factor's latent grid (``size``)."""
    if parent == "seg" and spec.reads_classes:
        return class_fractions(data["labels"], tuple(size))
    return data[f"lat_{parent}"].float()


def grounding_settings(value) -> dict | None:
    """``extra.grounding`` validated: None (off) or ``{token, pixel, select}``."""
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {"token", "pixel", "blocks"}:
        raise ValueError(f"extra.grounding must be a mapping with keys token, pixel and blocks, got {value!r}")
    out = {}
    for key, default in (("token", 1e-3), ("pixel", 5e-5)):
        v = value.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"extra.grounding.{key} must be a weight >= 0, got {v!r}")
        out[key] = float(v)
    blocks = value.get("blocks", ["mid", "up"])
    if not isinstance(blocks, list) or not blocks or not set(blocks) <= {"down", "mid", "up"}:
        raise ValueError(f"extra.grounding.blocks must be a non-empty list of down, mid, up; got {blocks!r}")
    out["select"] = LayerSelector(blocks=tuple(blocks), kinds=("cross",))
    return out


def null_probs(value, parents: tuple[str, ...]) -> dict[str, float]:
    """``extra.null_prob`` resolved per parent: one number for all, or a mapping (unnamed parents 0.2)."""
    def check(name: str, v) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"extra.null_prob{name} must be a probability in [0, 1], got {v!r}")
        return float(v)

    if not isinstance(value, dict):
        return dict.fromkeys(parents, check("", value))
    stray = sorted(set(value) - set(parents))
    if stray:
        raise ValueError(f"extra.null_prob names {stray}, which are not this factor's parents {list(parents)}")
    return {p: check(f"[{p!r}]", value.get(p, 0.2)) for p in parents}


def train_factor(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    ex = cfg.extra
    spec = factor_spec(cfg)
    dev = training_device()
    base = load_base_model(cfg.base.get("model"), device=dev, arg="base.model")
    graph_dir = Path(ex["graph"]) if ex.get("graph") else None
    wait = ex.get("wait_for_parents", 0) or 0
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
        raise ValueError(f"extra.wait_for_parents must be a number of minutes >= 0, got {wait!r}")
    graph = _graph_with(graph_dir, spec, base, bool(ex.get("replace", False)), str(cfg.output_dir),
                        pending=wait > 0)  # fmt: skip
    module = build_factor_module(spec, base.unet, cfg.model)
    init_parents = ex.get("init_parents")
    if init_parents is not None and (not ex.get("init_from") or not isinstance(init_parents, list)
                                     or not all(isinstance(p, str) for p in init_parents)):  # fmt: skip
        raise ValueError(f"extra.init_parents must be a list of parent names beside extra.init_from, got "
                         f"{init_parents!r} (init_from: {ex.get('init_from')!r})")  # fmt: skip
    if ex.get("init_from") and not resume:
        init_factor_from(module, Path(ex["init_from"]), spec, init_parents)
    module = module.to(dev)
    noise = base_noise_scheduler(base.scheduler.config)  # factors predict what the base predicts (epsilon or v)
    ac = noise.alphas_cumprod.to(dev)
    p_null, p_drop = null_probs(ex.get("null_prob", 0.2), spec.parents), float(ex.get("caption_dropout", 0.1))
    gamma = ex.get("min_snr_gamma", 5.0)
    w_distill = float(ex.get("distill_weight", 0.1)) if spec.kind == "adapter" and not spec.parents else 0.0
    every, sub = int(ex.get("distill_every", 10)), int(ex.get("distill_batch", 8))
    d_size = ex.get("distill_size")
    uncond = base.encode_text([""], allow_empty=True)[0]
    rank = int(os.environ.get("RANK", "0"))
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1000 * rank)  # draws on the training device

    ground = grounding_settings(ex.get("grounding"))
    # the seg maps' class ids, for their class shares or for grounding; the captions' token classes
    labels = ("labels",) if spec.reads_classes or ground else ()
    tokens = ("token_classes",) if ground else ()
    needed = tuple(dict.fromkeys([*spec.parents, spec.name])) + labels + tokens
    modalities = ("image", *CONDITIONS, *labels, *tokens) if ex.get("cache_dir") else needed  # a shared cache holds them all
    sizes = ex.get("sizes", [cfg.data.size])
    bad = [s for s in sizes if not isinstance(s, int) or s % base.size_factor or s < 64]
    if bad or not sizes:
        raise ValueError(f"extra.sizes must be render sizes >= 64 and multiples of {base.size_factor}, got {sizes!r}")
    text_fn = lambda c: base.encode_text(c)[0]
    def data_at(size: int) -> dict[str, torch.Tensor]:
        at = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, size=size))
        return cached_prerender(at, base.vae, text_fn, dev, modalities, {"base": base.fingerprint},
                                name=f"prerender-{size}{'-labels' if labels else ''}{'-tokens' if tokens else ''}",
                                folder=ex.get("cache_dir"), progress=progress, token_fn=base.token_class_ids)  # fmt: skip

    datasets = [data_at(s) for s in sizes]
    keys = ["embeddings", *(m if m in ("labels", "token_classes") else f"lat_{m}" for m in needed)]

    def batches():
        for i in itertools.count():
            data = datasets[i % len(datasets)]
            idx = torch.randint(len(data["embeddings"]), (cfg.batch_size,), generator=gen, device=dev)
            yield {k: data[k][idx].long() if k == "token_classes" else data[k][idx].float() for k in keys}

    select = LayerSelector()

    def loss_fn(model, batch, step):
        z, emb = batch[f"lat_{spec.name}"], batch["embeddings"]
        b = z.shape[0]
        drop = torch.rand(b, generator=gen, device=dev) < p_drop
        emb = torch.where(drop[:, None, None], uncond.expand_as(emb), emb)
        packed = None
        if spec.parents:
            rows = []
            for p in spec.parents:
                keep = (torch.rand(b, generator=gen, device=dev) >= p_null[p]).float()[:, None, None, None]
                zp = parent_value(spec, p, batch, z.shape[-2:]) * keep
                rows.append(torch.cat([zp, keep.expand(-1, 1, *zp.shape[-2:])], 1))
            packed = torch.cat(rows, 1)
        t = torch.randint(0, noise.config.num_train_timesteps, (b,), generator=gen, device=dev)
        eps = torch.randn(z.shape, generator=gen, device=dev)
        zt = noise.add_noise(z, eps, t)
        logs = {}
        store = AttentionStore(grad=True) if ground else None  # the grounded layers' cross-attention
        with (attention_control(model if spec.kind == "scratch" else base.unet, ground["select"], store) if ground
              else contextlib.nullcontext()):  # fmt: skip
            pred = factor_forward(spec, model, base.unet, zt, t, emb, packed)
        loss = min_snr_mse(pred, training_target(noise, z, eps, t), ac[t], gamma, noise.config.prediction_type).mean()
        if ground:
            tok = torch.where(drop[:, None], -1, batch["token_classes"])  # a dropped caption names nothing
            l_tok, l_pix = grounding_losses(store, tok, batch["labels"])
            loss = loss + (ground["token"] * l_tok + ground["pixel"] * l_pix)
            logs.update({"g_token": round(float(l_tok.detach()), 5), "g_pixel": round(float(l_pix.detach()), 5)})
        if w_distill and step % every == 0:
            k = min(sub, b)
            kd = distillation_loss(spec, model, base.unet, zt[:k], t[:k], emb[:k], select, size=d_size)
            loss = loss + w_distill * kd
            logs["distill"] = round(float(kd.detach()), 6)
        return loss, logs

    res = train(cfg, module, loss_fn, batches(), resume=resume, progress=progress)
    final = res.ema or res.model
    out = Path(cfg.output_dir) / "final"
    final.save_pretrained(out, safe_serialization=True, max_shard_size=SHARD)
    held = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=cfg.data.holdout_seed,
                                                             n_scenes=cfg.data.holdout_n))  # fmt: skip
    evaluated = tuple(m for m in needed if m != "token_classes")  # the held-out error reads no token classes
    metrics = evaluate_factor(spec, final, base, prerender(held, base.vae, text_fn, dev, evaluated, progress))
    if graph is not None:
        install_factor(graph_dir, graph, spec.name, out, wait_s=60.0 * wait)
    return _write_metrics(cfg, {"factor": spec.name, "kind": spec.kind, "parents": list(spec.parents),
                                **res.summary(),
                                "parameters": sum(p.numel() for p in final.parameters()),
                                "distill_weight": w_distill, "grounding": ex.get("grounding"), **metrics,
                                "graph": str(graph_dir) if graph_dir else None})  # fmt: skip


_IDENTITY_AT_INIT = ("text_attn.",)  # modules a fresh adapter starts as the identity with (zeroed output)


def _input_weight(kind: str) -> tuple[str, int]:
    """The tensor that reads a factor's packed parents, and the input channel they start at."""
    if kind == "adapter":
        return "conv_in.weight", 0
    if kind == "controlnet":
        return "controlnet_cond_embedding.conv_in.weight", 0
    return "conv_in.weight", LATENT_CHANNELS  # scratch: the noisy latent comes first


def _repack_parents(stored: dict, spec: FactorSpec, old: tuple[str, ...], own: dict) -> None:
    """Rewrite ``stored``'s parent-input weights, trained with parents ``old``, for ``spec.parents``:
    each old parent's channels go to its new place, a new parent's start at zero."""
    if list(old) == list(spec.parents):
        return
    bad = [p for p in old if p not in spec.parents] + sorted({p for p in old if old.count(p) > 1})
    if bad:
        raise ValueError(f"extra.init_parents {list(old)} must be distinct parents of this factor "
                         f"({list(spec.parents)}); not: {bad}")  # fmt: skip
    key, first = _input_weight(spec.kind)
    if key not in stored or key not in own:
        raise ValueError(f"extra.init_from: no {key!r} to repack the parents of")
    w, want = stored[key], own[key]
    width = dict(zip(spec.parents, spec.parent_widths(), strict=True))

    def starts(ps: tuple[str, ...]) -> tuple[dict[str, int], int]:  # each parent's first channel, and the end
        at, out = first, {}
        for p in ps:
            out[p], at = at, at + width[p]
        return out, at

    (was, end), (now, _) = starts(old), starts(spec.parents)
    if w.shape[1] != end:
        raise ValueError(f"extra.init_parents {list(old)}: the stored {key!r} reads {w.shape[1]} channels, "
                         f"{list(old)} give {end}")  # fmt: skip
    new = torch.zeros(w.shape[0], want.shape[1], *w.shape[2:], dtype=w.dtype)
    new[:, :first] = w[:, :first]
    for p in old:
        new[:, now[p] : now[p] + width[p]] = w[:, was[p] : was[p] + width[p]]
    stored[key] = new


def init_factor_from(module: torch.nn.Module, folder: Path, spec: FactorSpec | None = None,
                     parents: list[str] | None = None) -> None:  # fmt: skip
    """Load the weights in ``folder`` (a factor's safetensors) into the fresh ``module``:
    ``extra.init_from``. Every stored tensor must exist in the module with the same shape; the module
    may have more only in blocks that start as the identity, so the start reproduces the stored factor.
    ``parents`` (``extra.init_parents``, with the new factor's ``spec``): the stored factor's parents,
    a subset of ``spec.parents``; the new ones' input weights start at zero."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise ValueError(f"extra.init_from: no safetensors weights in {str(folder)!r}")
    stored = {k: v for f in files for k, v in load_file(str(f)).items()}
    own = module.state_dict()
    if parents is not None and spec is not None:
        _repack_parents(stored, spec, tuple(parents), own)
    unknown = sorted(k for k in stored if k not in own)
    if unknown:
        raise ValueError(f"extra.init_from: {str(folder)!r} has tensors this module lacks: {unknown[:3]}"
                         f"{' ...' if len(unknown) > 3 else ''} (a different kind or architecture)")  # fmt: skip
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in stored.items() if v.shape != own[k].shape]
    if bad:
        hint = "" if parents is not None else " (weights trained with other parents: set extra.init_parents)"
        raise ValueError(f"extra.init_from: shapes differ from {str(folder)!r}: {bad[:3]}{hint}")
    missing = sorted(k for k in own if k not in stored)
    not_identity = [k for k in missing if not k.startswith(_IDENTITY_AT_INIT)]
    if not_identity:
        raise ValueError(f"extra.init_from: {str(folder)!r} lacks {not_identity[:3]}, which a fresh module does "
                         f"not start as the identity")  # fmt: skip
    module.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in stored.items()}})
    log.info("started from %s (%d tensors; %d new, starting as the identity)", folder, len(stored), len(missing))


def distillation_loss(spec: FactorSpec, module, unet, zt, t, emb, select, size: int | None = None) -> torch.Tensor:
    """FG-DM eq. 7 on one batch: the frozen base (teacher) and the factor (student) on the same
    noisy latents; the student's maps keep their graph, so the loss trains the adapter."""
    teacher, student = AttentionStore(grad=False), AttentionStore(grad=True)
    with torch.no_grad(), attention_control(unet, select, teacher):
        unet(zt, t, encoder_hidden_states=emb)
    with attention_control(unet, select, student):
        factor_forward(spec, module, unet, zt, t, emb, None)
    return attention_distillation(teacher, student, size=size)


@torch.no_grad()
def evaluate_factor(spec: FactorSpec, module, base, data: dict, n: int = 256, kl_n: int = 16) -> dict:
    """Denoising error (plain epsilon MSE) on fixed noise at timesteps 100..900 of up to ``n``
    held-out latents: the factor (parents given), and the bare base UNet on the same latents.
    The ratio shows what the factor learned over the base. For a parentless adapter (the factor
    attention distillation trains) also ``eval_attention_kl``: the distillation KL between the
    base's and the factor's attention maps at every attention layer's own resolution, on the
    first ``kl_n`` of those noisy latents (0: skip) — how far the factor's attention has drifted
    from the base's, distilled or not."""
    module = module.eval()
    dev = base.device
    g = torch.Generator().manual_seed(1234)
    z = data[f"lat_{spec.name}"][:n].float().to(dev)
    emb = data["embeddings"][:n].float().to(dev)
    packed = None
    if spec.parents:
        head = {k: v[:n].to(dev) for k, v in data.items()}
        packed = torch.cat([torch.cat([parent_value(spec, p, head, z.shape[-2:]), z.new_ones(len(z), 1, *z.shape[-2:])], 1)
                            for p in spec.parents], 1)  # fmt: skip
    noise = base_noise_scheduler(base.scheduler.config)
    pred_type, ac = noise.config.prediction_type, noise.alphas_cumprod.to(dev)
    errs_f, errs_b, kls = [], [], []
    text_only_adapter = spec.kind == "adapter" and not spec.parents and kl_n > 0
    every_layer = LayerSelector()
    for tv in range(100, 1000, 200):
        t = torch.full((len(z),), tv, device=dev)
        eps = torch.randn(z.shape, generator=g).to(dev)
        zt = noise.add_noise(z, eps, t)
        a_t = ac[t].view(-1, 1, 1, 1)
        out_f = to_epsilon(factor_forward(spec, module, base.unet, zt, t, emb, packed), zt, a_t, pred_type)
        errs_f.append(float(((out_f - eps) ** 2).mean()))
        if spec.kind != "scratch":
            out_b = to_epsilon(base.unet(zt, t, encoder_hidden_states=emb).sample, zt, a_t, pred_type)
            errs_b.append(float(((out_b - eps) ** 2).mean()))
        for i in range(0, min(kl_n, len(z)) if text_only_adapter else 0, 8):
            k = slice(i, min(i + 8, kl_n, len(z)))
            kls.append((k.stop - k.start, float(distillation_loss(spec, module, base.unet, zt[k], t[k], emb[k],
                                                                  every_layer))))  # fmt: skip
    f = sum(errs_f) / len(errs_f)
    out = {"eval_mse_factor": round(f, 5), "eval_n": len(z)}
    if errs_b:
        b = sum(errs_b) / len(errs_b)
        out.update({"eval_mse_base": round(b, 5), "eval_mse_ratio": round(f / b, 4)})
    if kls:
        out["eval_attention_kl"] = float(f"{sum(w * v for w, v in kls) / sum(w for w, _ in kls):.4g}")
    return out


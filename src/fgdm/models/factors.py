"""FG-DM factors: the modules that turn a frozen SD-shaped base into conditional diffusion models
of condition-map latents and of the image, and the factor graph that wires them.

A factor is one node of the graph: a variable (``seg``, ``depth``, ``normal``, ``sketch`` or
``image``), its parents (the variables it is conditioned on) and the module that does it:

- ``adapter``: a T2I-Adapter-shaped branch (one feature block per UNet down block, each a conv and
  ``blocks_per_scale`` residual blocks) whose features are added to the frozen base UNet's encoder
  outputs. As in the FG-DM paper it is conditioned on the timestep embedding, and its input is the
  factor's own noisy latent when it has no parents, else the parents' latents. Only the adapter
  trains. (The authors' released inference config used the plain, time-free adapter; here it is
  ``time_conditioned: true`` by default and configurable.)
- ``controlnet``: a ``diffusers.ControlNetModel`` initialised from the base UNet, conditioned on the
  parents' latents (at latent resolution: no pixel-space stem).
- ``scratch``: a whole ``UNet2DConditionModel`` trained from scratch, whose input is the noisy latent
  concatenated with the parents' latents (the paper's from-scratch variant).

Parents enter as a packed tensor: for each parent (in declared order) its 4 latent channels and a
presence channel (1 = given, 0 = the null condition, whose latent is all zeros). Training replaces
each parent by the null condition part of the time, so any subset of the graph can be run.

A factor with ``seg_input: classes`` reads its seg parent not as a latent but as the map's classes:
per latent cell, the share of the cell's pixels of each of the world's ``NUM_CLASSES`` classes
(:func:`class_fractions`; void counts for none), then the presence channel. Such a factor cannot take
a palette latent's colours for the objects' names: the classes are its input, one channel each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..world.categories import NUM_CLASSES
from ..world.yaml12 import load_yaml

VARIABLES = ("seg", "depth", "normal", "sketch", "image")
KINDS = ("adapter", "controlnet", "scratch")
SEG_INPUTS = ("latent", "classes")  # how a factor reads its seg parent
LATENT_CHANNELS = 4
PARENT_CHANNELS = LATENT_CHANNELS + 1  # latent + presence flag
CLASS_CHANNELS = NUM_CLASSES + 1  # class fractions + presence flag (seg_input: classes)
GRAPH_FILE = "graph.yaml"


def default_graph_dir() -> Path:
    """The shipped FG-DM graph directory (package data)."""
    return Path(str(resources.files("fgdm.models") / "data" / "fgdm"))


# ----------------------------------------------------------------------------- adapter


class _TimeResBlock(nn.Module):
    def __init__(self, ch: int, temb_dim: int | None, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, ch) if temb_dim else None
        self.norm2, self.conv2 = nn.GroupNorm(groups, ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.temb is not None and temb is not None:
            h = h + self.temb(F.silu(temb))[:, :, None, None]
        return x + self.conv2(F.silu(self.norm2(h)))


class _TextAttn(nn.Module):
    """Residual cross-attention from adapter features to the caption's token embeddings (the output
    projection starts at zero, so a fresh block is the identity)."""

    def __init__(self, ch: int, text_dim: int, groups: int, head_dim: int = 16) -> None:
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm = nn.GroupNorm(groups, ch)
        self.q, self.k, self.v = nn.Linear(ch, ch, bias=False), nn.Linear(text_dim, ch, bias=False), nn.Linear(text_dim, ch, bias=False)
        self.out = nn.Linear(ch, ch)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.q(self.norm(x).flatten(2).transpose(1, 2))  # (B, hw, C)
        k, v = self.k(context), self.v(context)  # (B, L, C)
        split = lambda y: y.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, n, C/heads)
        a = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)
        return x + self.out(a).transpose(1, 2).reshape(b, c, h, w)


class FactorAdapter(ModelMixin, ConfigMixin):
    """T2I-Adapter-shaped, optionally time-conditioned feature branch for a frozen UNet.

    Args:
        in_channels: 4 (the factor's own noisy latent) or 5 x number of parents.
        channels: the adapter's width at each scale.
        out_channels: the UNet's channels where each feature is added (one per down block).
        out_strides: each feature's downsampling factor relative to the latent.
        blocks_per_scale: residual blocks per scale (the paper: 2).
        time_conditioned: add the timestep embedding inside every residual block.
        norm_groups: GroupNorm groups (must divide every width).
        text_dim: if set, the adapter also reads the caption: a cross-attention block after each
            scale's residual blocks attends to the text encoder's token embeddings (this width).
            Not in the paper (its adapter sees no text); ``model: {text_conditioned: true}`` in a
            training config sets it to the base's text width.

    The output projections start at zero, so an untrained adapter leaves the base model unchanged.
    """

    @register_to_config
    def __init__(self, in_channels: int = 4, channels: tuple[int, ...] = (32, 64, 80),
                 out_channels: tuple[int, ...] = (64, 128, 160), out_strides: tuple[int, ...] = (1, 2, 4),
                 blocks_per_scale: int = 2, time_conditioned: bool = True, norm_groups: int = 8,
                 text_dim: int | None = None) -> None:  # fmt: skip
        super().__init__()
        if not len(channels) == len(out_channels) == len(out_strides):
            raise ValueError(
                f"channels, out_channels and out_strides must have one entry per UNet down block, got "
                f"{list(channels)}, {list(out_channels)}, {list(out_strides)}"
            )
        bad = [c for c in channels if c % norm_groups]
        if bad:
            raise ValueError(f"adapter channels {bad} are not divisible by norm_groups={norm_groups}")
        temb_dim = 4 * channels[0] if time_conditioned else None
        if time_conditioned:
            self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
            self.time_embedding = TimestepEmbedding(channels[0], temb_dim)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.scales = nn.ModuleList()
        prev = channels[0]
        for ch in channels:
            self.scales.append(nn.ModuleDict({
                "conv": nn.Conv2d(prev, ch, 3, padding=1),
                "blocks": nn.ModuleList([_TimeResBlock(ch, temb_dim, norm_groups) for _ in range(blocks_per_scale)]),
            }))  # fmt: skip
            prev = ch
        if text_dim:
            self.text_attn = nn.ModuleList([_TextAttn(ch, text_dim, norm_groups) for ch in channels])
        self.out = nn.ModuleList([nn.Conv2d(c, o, 1) for c, o in zip(channels, out_channels, strict=True)])
        for conv in self.out:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Features to add to the UNet's down blocks; ``context`` (the caption's token embeddings,
        (B, L, text_dim)) is required when the adapter is text-conditioned and ignored otherwise."""
        cfg = self.config
        if cfg.text_dim and context is None:
            raise ValueError("this adapter is text-conditioned (text_dim set): pass context, the caption's embeddings")
        temb = None
        if cfg.time_conditioned:
            t = timestep.expand(x.shape[0]) if timestep.ndim == 0 else timestep
            temb = self.time_embedding(self.time_proj(t.to(x.device)).to(x.dtype))
        h = self.conv_in(x)
        if cfg.text_dim:
            context = context.to(h)
            if context.shape[0] != x.shape[0]:
                context = context.expand(x.shape[0], -1, -1)  # one caption for the whole batch
        feats, stride = [], 1
        for i, (scale, out, s) in enumerate(zip(self.scales, self.out, cfg.out_strides, strict=True)):
            if s > stride:
                h = F.avg_pool2d(h, s // stride)
                stride = s
            h = scale["conv"](h)
            for block in scale["blocks"]:
                h = block(h, temb)
            if cfg.text_dim:
                h = self.text_attn[i](h, context)
            feats.append(out(h))
        return feats


def unet_feature_targets(unet_config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where diffusers adds adapter features: (channels, strides) per down block.

    Cross-attention blocks get the feature before their downsampler; plain down blocks after it
    (so a non-final plain block's feature is at the next resolution).
    """
    types, chans = unet_config.down_block_types, unet_config.block_out_channels
    strides = []
    for i, t in enumerate(types):
        final = i == len(types) - 1
        strides.append(2**i if ("CrossAttn" in t or final) else 2 ** (i + 1))
    return tuple(chans), tuple(strides)


# ----------------------------------------------------------------------------- graph spec


@dataclass
class FactorSpec:
    """One node: ``name`` is the variable; ``size`` (pixels), ``steps``, ``guidance`` and ``eta``
    are the sampling defaults of this factor (``None`` size = the base model's native size; ``eta``
    is DDIM's, 0 deterministic to 1 DDPM-like noise, e.g. 1 for a depth factor whose eta-0 maps
    are too smooth)."""

    name: str
    kind: str = "adapter"
    parents: tuple[str, ...] = ()
    size: int | None = None
    steps: int = 25
    guidance: float = 7.5
    cond_guidance: float = 1.0  # guidance over the parents (1 = off)
    eta: float = 0.0  # DDIM eta of this factor's sampler (0 = deterministic)
    seg_input: str = "latent"  # the seg parent as its VAE latent, or as per-cell class shares ("classes")

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "parents": list(self.parents), "size": self.size, "steps": self.steps,
             "guidance": self.guidance, "cond_guidance": self.cond_guidance, "eta": self.eta}  # fmt: skip
        return d if self.seg_input == "latent" else {**d, "seg_input": self.seg_input}  # older graphs stay as they were

    @property
    def reads_classes(self) -> bool:
        """Whether the seg parent enters as class shares (``seg_input: classes``)."""
        return self.seg_input == "classes"

    def parent_widths(self) -> list[int]:
        """Channels of each parent in the packed tensor, in ``parents`` order."""
        return [CLASS_CHANNELS if p == "seg" and self.reads_classes else PARENT_CHANNELS for p in self.parents]


_SPEC_KEYS = {"kind", "parents", "size", "steps", "guidance", "cond_guidance", "eta", "seg_input"}


@dataclass
class GraphSpec:
    """A validated factor graph: nodes in topological order."""

    factors: dict[str, FactorSpec]
    base: str = "default"  # "default" = the shipped MiniSD, else a diffusers SD directory
    base_fingerprint: str | None = None
    info: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, where: str = "graph") -> GraphSpec:
        if not isinstance(d, dict) or not isinstance(d.get("factors"), dict) or not d["factors"]:
            raise ValueError(f"{where}: needs a non-empty 'factors' mapping (name -> {{kind, parents, ...}})")
        unknown = sorted(set(d) - {"factors", "base", "base_fingerprint", "info"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}")
        specs = {}
        for name, f in d["factors"].items():
            f = f or {}
            if name not in VARIABLES:
                raise ValueError(f"{where}: unknown factor {name!r}; factors are {list(VARIABLES)}")
            bad = sorted(set(f) - _SPEC_KEYS)
            if bad:
                raise ValueError(f"{where}: factor {name!r} has unknown keys {bad}; known: {sorted(_SPEC_KEYS)}")
            spec = FactorSpec(name, **{**f, "parents": tuple(f.get("parents") or ())})
            _check_spec(spec, where)
            specs[name] = spec
        order = _topological(specs, where)
        fp = d.get("base_fingerprint")
        return cls({n: specs[n] for n in order}, str(d.get("base", "default")), None if fp is None else str(fp),
                   dict(d.get("info") or {}))  # fmt: skip

    def to_dict(self) -> dict:
        return {"base": self.base, "base_fingerprint": self.base_fingerprint, "info": self.info,
                "factors": {n: s.to_dict() for n, s in self.factors.items()}}  # fmt: skip

    @property
    def order(self) -> list[str]:
        return list(self.factors)

    def first_factors(self) -> list[str]:
        """The text-only factors (no parents): the ones attention distillation applies to."""
        return [n for n, s in self.factors.items() if not s.parents]


def check_eta(value, what: str) -> float:
    """DDIM's eta as a float, or a ValueError naming ``what`` unless it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{what} must be a number in [0, 1] (DDIM's eta), got {value!r}")
    return float(value)


def _check_spec(s: FactorSpec, where: str) -> None:
    if s.kind not in KINDS:
        raise ValueError(f"{where}: factor {s.name!r} has kind {s.kind!r}; kinds are {list(KINDS)}")
    if s.name in s.parents:
        raise ValueError(f"{where}: factor {s.name!r} lists itself as a parent")
    if len(set(s.parents)) != len(s.parents):
        raise ValueError(f"{where}: factor {s.name!r} lists a parent twice: {list(s.parents)}")
    if "image" in s.parents:
        raise ValueError(f"{where}: factor {s.name!r} is conditioned on the image; the image is the graph's sink")
    if s.kind == "controlnet" and not s.parents:
        raise ValueError(f"{where}: factor {s.name!r} is a controlnet with no parents (a controlnet needs a condition)")
    if s.size is not None and (not isinstance(s.size, int) or s.size < 8 or s.size % 8):
        raise ValueError(f"{where}: factor {s.name!r} size must be a multiple of 8, got {s.size!r}")
    if not isinstance(s.steps, int) or s.steps < 1:
        raise ValueError(f"{where}: factor {s.name!r} steps must be a positive integer, got {s.steps!r}")
    for k in ("guidance", "cond_guidance"):
        v = getattr(s, k)
        if not isinstance(v, (int, float)) or v < 1:
            raise ValueError(f"{where}: factor {s.name!r} {k} must be a number >= 1, got {v!r}")
    check_eta(s.eta, f"{where}: factor {s.name!r} eta")
    if s.seg_input not in SEG_INPUTS:
        raise ValueError(f"{where}: factor {s.name!r} seg_input must be one of {list(SEG_INPUTS)}, got {s.seg_input!r}")
    if s.reads_classes and "seg" not in s.parents:
        raise ValueError(f"{where}: factor {s.name!r} has seg_input 'classes' but no seg parent (its parents: "
                         f"{list(s.parents)})")  # fmt: skip


def _topological(specs: dict[str, FactorSpec], where: str) -> list[str]:
    for s in specs.values():
        missing = [p for p in s.parents if p not in specs]
        if missing:
            raise ValueError(f"{where}: factor {s.name!r} has parents {missing} that are not in the graph")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = path[path.index(n) :] + [n]
            raise ValueError(f"{where}: the graph has a cycle: {' -> '.join(cycle)}")
        state[n] = 1
        for p in specs[n].parents:
            visit(p, [*path, n])
        state[n] = 2
        order.append(n)

    for n in sorted(specs, key=VARIABLES.index):
        visit(n, [])
    return order


def load_graph_spec(path: str | Path) -> GraphSpec:
    """Read a graph declaration (YAML) — a file, or a graph directory holding ``graph.yaml``."""
    p = Path(path)
    f = p / GRAPH_FILE if p.is_dir() else p
    try:
        d = load_yaml(f.read_text())
    except OSError as e:
        raise ValueError(f"graph {str(path)!r} cannot be read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"graph {str(path)!r} is not valid YAML: {e}") from None
    return GraphSpec.from_dict(d, where=f"graph {str(f)!r}")


# ----------------------------------------------------------------------------- factor modules


def build_factor_module(spec: FactorSpec, base_unet, arch: dict | None = None) -> nn.Module:
    """A fresh module for ``spec`` on ``base_unet`` (a diffusers ``UNet2DConditionModel``)."""
    arch = dict(arch or {})
    n_in = sum(spec.parent_widths())
    if spec.kind == "adapter":
        chans, strides = unet_feature_targets(base_unet.config)
        width = arch.pop("channels", None) or [max(8, c // 2) for c in chans]
        groups = arch.pop("norm_groups", 8)
        if arch.pop("text_conditioned", False):
            arch["text_dim"] = base_unet.config.cross_attention_dim
        return FactorAdapter(in_channels=n_in or LATENT_CHANNELS, channels=tuple(width), out_channels=chans,
                             out_strides=strides, norm_groups=groups, **arch)  # fmt: skip
    if spec.kind == "controlnet":
        from diffusers import ControlNetModel

        net = ControlNetModel.from_unet(
            base_unet, conditioning_embedding_out_channels=tuple(arch.pop("embedding_channels", (32,))),
            conditioning_channels=n_in,
        )  # fmt: skip
        if arch:
            raise ValueError(f"unknown controlnet options {sorted(arch)}; known: ['embedding_channels']")
        return net
    from diffusers import UNet2DConditionModel

    cfg = {k: v for k, v in dict(base_unet.config).items() if not k.startswith("_")}
    cfg.update(arch)
    cfg["in_channels"] = LATENT_CHANNELS + n_in
    return UNet2DConditionModel(**cfg)


def load_factor_module(spec: FactorSpec, folder: Path) -> nn.Module:
    """Load a factor's weights (safetensors only) from ``folder``."""
    if not (folder / "config.json").exists():
        raise ValueError(f"factor {spec.name!r}: missing weights folder {str(folder)!r}")
    pickles = [f.name for f in folder.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    if pickles and not any(f.suffix == ".safetensors" for f in folder.iterdir()):
        raise ValueError(f"factor {spec.name!r}: {pickles[0]} is a pickle checkpoint; fgdm loads safetensors only")
    if spec.kind == "adapter":
        cls = FactorAdapter
    elif spec.kind == "controlnet":
        from diffusers import ControlNetModel as cls
    else:
        from diffusers import UNet2DConditionModel as cls
    try:
        return cls.from_pretrained(folder, use_safetensors=True)
    except Exception as e:  # diffusers raises many types for corrupt files; report them as bad input
        raise ValueError(f"factor {spec.name!r}: {str(folder)!r} could not be loaded: {type(e).__name__}: {e}") from None


def check_factor_module(spec: FactorSpec, module: nn.Module, base_unet, text_dim: int) -> None:
    """Shapes agree: the module's inputs match the parents, its outputs the base UNet."""
    cfg = module.config
    n_in = sum(spec.parent_widths())
    where = f"factor {spec.name!r} ({spec.kind})"
    if spec.kind == "adapter":
        want_in = n_in or LATENT_CHANNELS
        chans, strides = unet_feature_targets(base_unet.config)
        if cfg.in_channels != want_in:
            raise ValueError(f"{where}: takes {cfg.in_channels} input channels, its parents {list(spec.parents)} give {want_in}")
        if tuple(cfg.out_channels) != chans or tuple(cfg.out_strides) != strides:
            raise ValueError(f"{where}: features {list(cfg.out_channels)} at strides {list(cfg.out_strides)} do not "
                             f"fit the base UNet ({list(chans)} at {list(strides)})")  # fmt: skip
        if cfg.get("text_dim") and cfg.text_dim != text_dim:
            raise ValueError(f"{where}: reads text of width {cfg.text_dim}, the text encoder gives {text_dim}")
    elif spec.kind == "controlnet":
        if cfg.conditioning_channels != n_in:
            raise ValueError(f"{where}: takes {cfg.conditioning_channels} condition channels, its parents give {n_in}")
        if tuple(cfg.block_out_channels) != tuple(base_unet.config.block_out_channels):
            raise ValueError(f"{where}: block channels {list(cfg.block_out_channels)} do not match the base UNet's")
    else:
        if cfg.in_channels != LATENT_CHANNELS + n_in:
            raise ValueError(f"{where}: takes {cfg.in_channels} input channels, expected {LATENT_CHANNELS + n_in}")
    if spec.kind != "adapter" and cfg.cross_attention_dim != text_dim:
        raise ValueError(f"{where}: cross-attention width {cfg.cross_attention_dim} != text encoder width {text_dim}")


def drop_parents(spec: FactorSpec, module: nn.Module, names: list[str]) -> tuple[FactorSpec, nn.Module]:
    """``spec`` and ``module`` without the parents ``names``: a factor that runs exactly as it ran
    with those parents null.

    A null parent enters as zeros (its latent and its presence channel), and every factor kind
    reads the packed parents through one convolution first (the adapter's and the from-scratch
    UNet's ``conv_in``, the ControlNet's condition-embedding ``conv_in``), to which zero channels
    contribute nothing; so removing those channels from that convolution's weight changes no output.
    Whether the factor is any good without the dropped maps is what training decided: one trained
    with each parent dropped part of the time (``extra.null_prob``) was trained for it. An adapter or
    ControlNet must keep at least one parent (without parents an adapter reads its own latent)."""
    unknown = [n for n in names if n not in spec.parents]
    if unknown:
        raise ValueError(f"factor {spec.name!r}: {unknown} are not its parents {list(spec.parents)}")
    keep = [p for p in spec.parents if p not in names]
    if not keep and spec.kind != "scratch":
        raise ValueError(f"factor {spec.name!r} ({spec.kind}) must keep at least one of its parents {list(spec.parents)}")
    offset = LATENT_CHANNELS if spec.kind == "scratch" else 0  # the scratch UNet reads its own latent first
    channels, start = list(range(offset)), offset
    for p, width in zip(spec.parents, spec.parent_widths(), strict=True):
        if p in keep:
            channels += range(start, start + width)
        start += width
    conv, key = {"adapter": ("conv_in", "in_channels"), "scratch": ("conv_in", "in_channels"),
                 "controlnet": ("controlnet_cond_embedding.conv_in", "conditioning_channels")}[spec.kind]  # fmt: skip
    weights = module.state_dict()
    if weights[f"{conv}.weight"].shape[1] != start:
        raise ValueError(f"factor {spec.name!r}: its {conv} reads {weights[f'{conv}.weight'].shape[1]} channels, "
                         f"its parents give {start}")  # fmt: skip
    weights[f"{conv}.weight"] = weights[f"{conv}.weight"][:, channels].clone()
    cfg = {k: v for k, v in dict(module.config).items() if not k.startswith("_")}
    cfg[key] = len(channels)
    param = next(module.parameters())
    out = type(module).from_config(cfg)
    out.load_state_dict(weights)
    return replace(spec, parents=tuple(keep)), out.to(device=param.device, dtype=param.dtype)


def class_fractions(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer class-id maps -> (B, NUM_CLASSES, h, w) float: per cell of an ``size`` grid,
    the share of its pixels of each class (void and unknown ids count for none; a grid finer than the
    map repeats its pixels)."""
    if labels.ndim != 3:
        raise ValueError(f"class_fractions: labels must be (B, H, W) class ids, got shape {tuple(labels.shape)}")
    lab = labels.long()
    lab = torch.where((lab >= 0) & (lab < NUM_CLASSES), lab, NUM_CLASSES)  # void and unknown: one spare class
    (b, hh, ww), (h, w) = lab.shape, size
    if hh % h or ww % w:  # a grid that does not divide the map: pool a one-hot (B, K, H, W)
        onehot = F.one_hot(lab, NUM_CLASSES + 1)[..., :NUM_CLASSES]
        return F.adaptive_avg_pool2d(onehot.permute(0, 3, 1, 2).float(), size)
    # count each (class, cell) pair without the one-hot: B x H x W additions instead of B x K x H x W
    cell = (torch.arange(hh, device=lab.device) // (hh // h))[:, None] * w + torch.arange(ww, device=lab.device) // (ww // w)
    counts = torch.zeros(b, (NUM_CLASSES + 1) * h * w, device=lab.device)
    counts.scatter_add_(1, (lab * (h * w) + cell).flatten(1), torch.ones(b, hh * ww, device=lab.device))
    return counts.view(b, NUM_CLASSES + 1, h, w)[:, :NUM_CLASSES] / ((hh // h) * (ww // w))


def pack_parents(parents: tuple[str, ...], latents: dict[str, torch.Tensor | None], like: torch.Tensor,
                 widths: list[int] | None = None) -> torch.Tensor:  # fmt: skip
    """The packed parent tensor (B, sum of widths, h, w) at ``like``'s size: each parent's value
    (a latent, or a seg map's class shares from :func:`class_fractions`; resized bilinearly if its
    resolution differs) and a presence channel; absent parents are null (zeros). ``widths``: each
    parent's channels with its presence flag (:meth:`FactorSpec.parent_widths`; default latents)."""
    b, _, h, w = like.shape
    widths = widths or [PARENT_CHANNELS] * len(parents)
    rows = []
    for p, width in zip(parents, widths, strict=True):
        z = latents.get(p)
        if z is None:
            rows.append(like.new_zeros(b, width, h, w))
            continue
        if z.shape[1] != width - 1:
            raise ValueError(f"parent {p!r} has {z.shape[1]} channels, the factor reads {width - 1}")
        z = z.to(like)
        if z.shape[0] == 1 and b > 1:
            z = z.expand(b, -1, -1, -1)
        if z.shape[-2:] != (h, w):
            z = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
        rows.append(torch.cat([z, like.new_ones(b, 1, h, w)], 1))
    return torch.cat(rows, 1)


def factor_forward(spec: FactorSpec, module: nn.Module, base_unet, x_t: torch.Tensor, t: torch.Tensor,
                   context: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """The factor's raw model output for noisy latents ``x_t`` (the base's prediction type).

    ``parents`` is the packed parent tensor (:func:`pack_parents`); ``None`` for a parentless factor.
    """
    if spec.kind == "adapter":
        feats = module(x_t if parents is None else parents, t, context)
        return base_unet(x_t, t, encoder_hidden_states=context, down_intrablock_additional_residuals=list(feats)).sample
    if spec.kind == "controlnet":
        down, mid = module(x_t, t, encoder_hidden_states=context, controlnet_cond=parents, return_dict=False)
        return base_unet(x_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample  # fmt: skip
    inp = x_t if parents is None else torch.cat([x_t, parents.to(x_t)], 1)
    return module(inp, t, encoder_hidden_states=context).sample


def save_graph_spec(spec: GraphSpec, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (GRAPH_FILE + ".partial")
    tmp.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    tmp.replace(folder / GRAPH_FILE)


def graph_summary(spec: GraphSpec) -> str:
    return json.dumps({n: {"kind": s.kind, "parents": list(s.parents)} for n, s in spec.factors.items()})

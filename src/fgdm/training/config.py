"""Run configurations for the trainers: dataclasses loaded from YAML, validated, unknown keys refused."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..world.yaml12 import load_yaml

COMPONENTS = ("tokenizer", "clip", "vae", "unet", "judge", "factor", "image-factor")
# the ``extra:`` settings each trainer reads (documented in its module); a misspelt one is an error,
# not a silently ignored setting
_FACTOR_EXTRA = {"variable", "parents", "kind", "null_prob", "caption_dropout", "min_snr_gamma", "distill_weight",
                 "distill_every", "distill_batch", "distill_size", "graph", "replace", "sample", "sizes", "cache_dir",
                 "wait_for_parents", "init_from", "init_parents", "seg_input", "grounding"}  # fmt: skip
EXTRA_KEYS = {
    "tokenizer": set(),
    "clip": {"pool", "freeze_text"},
    "vae": {"kl_weight", "pool", "freeze_encoder", "modality_probs"},
    "unet": {"caption_dropout", "min_snr_gamma", "prerender", "train_text_encoder", "freeze_unet", "text_encoder_lr"},
    "judge": {"pool", "dataset", "thing_weight", "depth_weight", "presence_weight", "loss_points"},
    "factor": _FACTOR_EXTRA,
    "image-factor": _FACTOR_EXTRA,
}


@dataclass
class DataConfig:
    n_scenes: int = 10_000  # training scenes: items 0..n-1 of the world with ``seed``
    seed: int = 0
    size: int = 128
    workers: int = 0  # DataLoader / render processes
    world: dict = field(default_factory=dict)  # WorldConfig overrides
    holdout_seed: int = 10_000  # evaluation scenes come from this seed (never trained on)
    holdout_n: int = 256


@dataclass
class OptimConfig:
    lr: float = 4e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    rewarm_steps: int | None = None  # warm-up after --resume (AdamW's moments are not saved); default warmup_steps
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max gradient norm; 0 = no clipping
    # after warm-up: "constant", or "cosine" decay over the run's total ``steps`` down to
    # ``min_lr_ratio * lr`` (keyed to the global step, so --resume and --max-minutes runs follow one curve);
    # with ``decay_start`` the rate stays constant until that global step and the cosine runs from there
    # to ``steps`` (warmup-stable-decay: a cool-down appended to a constant-rate run that is resumed)
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    decay_start: int = 0

    def __post_init__(self) -> None:
        for name, positive in (("lr", True), ("weight_decay", False), ("grad_clip", False)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or (positive and v == 0):
                raise ValueError(f"optim.{name} must be {'a positive number' if positive else 'a number >= 0'}, got {v!r}")
        for name in ("warmup_steps", "rewarm_steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"optim.{name} must be an integer >= 0, got {v!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.schedule must be constant or cosine, got {self.schedule!r}")
        if isinstance(self.min_lr_ratio, bool) or not isinstance(self.min_lr_ratio, int | float) or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be a number in [0, 1], got {self.min_lr_ratio!r}")
        if isinstance(self.decay_start, bool) or not isinstance(self.decay_start, int) or self.decay_start < 0:
            raise ValueError(f"optim.decay_start must be an integer >= 0, got {self.decay_start!r}")
        if self.decay_start and self.schedule != "cosine":
            raise ValueError(f"optim.decay_start ({self.decay_start}) needs optim.schedule: cosine, got {self.schedule!r}")

    def factor(self, step: int, total: int) -> float:
        """The schedule's multiplier of ``lr`` at global ``step`` (0-based) of ``total`` (warm-up apart)."""
        if self.schedule == "constant":
            return 1.0
        frac = min(1.0, max(0, step - self.decay_start) / max(1, total - self.decay_start))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))


@dataclass
class TrainConfig:
    component: str
    output_dir: str
    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    ema_decay: float | None = None
    checkpoint_dtype: str = "float32"  # the trained weights in checkpoints (the EMA is always bf16)
    compile: bool = False
    max_minutes: float | None = None  # wall-clock budget: stop early (with a checkpoint) once spent
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: dict = field(default_factory=dict)  # architecture of the trained component
    base: dict = field(default_factory=dict)  # directories of the components it builds on
    extra: dict = field(default_factory=dict)  # component-specific settings (documented per trainer)

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"component must be one of {list(COMPONENTS)}, got {self.component!r}")
        for name in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.checkpoint_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"checkpoint_dtype must be float32 or bfloat16, got {self.checkpoint_dtype!r}")
        if self.max_minutes is not None and (isinstance(self.max_minutes, bool) or not isinstance(self.max_minutes, int | float) or self.max_minutes <= 0):
            raise ValueError(f"max_minutes must be a positive number of minutes, got {self.max_minutes!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay!r}")
        if self.optim.decay_start >= self.steps:
            raise ValueError(f"optim.decay_start ({self.optim.decay_start}) must be below steps ({self.steps})")
        unknown = sorted(set(self.extra or {}) - EXTRA_KEYS[self.component])
        if unknown:
            raise ValueError(f"unknown keys {unknown} in extra for {self.component}; known: {sorted(EXTRA_KEYS[self.component])}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, d: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {where}; known: {sorted(known)}")
    return cls(**d)


def train_config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    if "data" in d:
        d["data"] = _build(DataConfig, d["data"] or {}, "data")
    if "optim" in d:
        o = dict(d["optim"] or {})
        if "betas" in o:
            o["betas"] = tuple(o["betas"])
        d["optim"] = _build(OptimConfig, o, "optim")
    return _build(TrainConfig, d, "the training config")


def apply_settings(d: dict, settings: list[str]) -> dict:
    """``["data.n_scenes=64", "extra.sizes=[64]"]`` -> ``d`` with those dotted keys set (values
    parsed as YAML). Unknown keys are caught later by the config's own validation."""
    d = dict(d)
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. data.n_scenes=64), got {item!r}")
        try:  # YAML 1.2 booleans only: "no" stays the string "no" (e.g. mixed_precision=no)
            value = text.strip() if text.strip().lower() in ("yes", "no", "on", "off", "y", "n") else load_yaml(text)
        except yaml.YAMLError:
            raise ValueError(f"--set {item!r}: the value is not valid YAML") from None
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            child = node.get(p)
            if child is not None and not isinstance(child, dict):
                raise ValueError(f"--set {item!r}: {p!r} is a value ({child!r}), not a section")
            node[p] = dict(child or {})
            node = node[p]
        node[parts[-1]] = value
    return d


def load_train_config(path: str | Path, overrides: dict | None = None, settings: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config; ``settings`` (``--set KEY=VALUE``) and ``overrides`` (e.g.
    from the command line) win."""
    try:
        d = load_yaml(Path(path).read_text()) or {}
    except OSError as e:
        raise ValueError(f"config {str(path)!r} cannot be read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"config {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"config {str(path)!r} must be a mapping")
    d = apply_settings(d, settings or [])
    d.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return train_config_from_dict(d)

"""The shared training loop: accelerate, AdamW + warm-up, gradient accumulation, clipping, EMA,
a loss curve in CSV, progress bars, atomic safetensors checkpoints and resume, and a wall-clock
budget (``max_minutes``) that ends a run cleanly, with a checkpoint, before a remote machine's
time limit would kill it."""

from __future__ import annotations

import copy
import csv
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig

log = logging.getLogger(__name__)

_clock_origin: float | None = None


@contextmanager
def budget_clock() -> Iterator[None]:
    """Inside this block ``max_minutes`` counts from the block's start (``fgdm train`` wraps a
    whole command in it, so data pre-rendering and compilation are inside the budget); outside,
    it counts from the start of :func:`train`."""
    global _clock_origin
    _clock_origin = time.monotonic()
    try:
        yield
    finally:
        _clock_origin = None


def training_device() -> torch.device:
    """Where the trainers put their data and models: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_runs_bf16_fast(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU runs bf16 at speed: natively (AVX512-BF16, AMX-BF16) or through oneDNN's
    AVX-512 kernels; False on a CPU with neither (AVX2 at most), where PyTorch's bf16 convolutions
    ran 57x slower than fp32 (an AMD EPYC; results.md, "bf16 on an AVX2-only CPU"); None where
    unknown (no ``/proc/cpuinfo``)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return None if flags is None else bool({"avx512_bf16", "amx_bf16", "avx512f"} & set(flags))


def warn_if_emulated_bf16(mixed_precision: str, device: torch.device | str, where: str = "training") -> bool:
    """Log a warning (and return True) when ``mixed_precision`` is bf16 on a CPU that runs it slowly."""
    if mixed_precision != "bf16" or torch.device(device).type != "cpu" or cpu_runs_bf16_fast() is not False:
        return False
    log.warning("%s in bf16 on a CPU without AVX-512 or native bf16 (AVX2 at most): PyTorch emulates it, "
                "many times slower than fp32 here; set mixed_precision=no (--set mixed_precision=no)", where)
    return True


LossFn = Callable[[torch.nn.Module, dict, int], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainResult:
    model: torch.nn.Module  # the trained module (unwrapped)
    ema: torch.nn.Module | None
    step: int
    seconds: float
    last_logs: dict[str, float]
    stopped_early: bool = False  # ``max_minutes`` ran out before ``steps``

    def summary(self) -> dict:
        """What every trainer reports in its metrics.json."""
        return {"steps": self.step, "train_seconds": round(self.seconds, 1), "stopped_early": self.stopped_early}


class EMA(torch.nn.Module):
    """Exponential moving average of a module's parameters (buffers copied)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        src = dict(model.named_parameters())
        for name, p in self.shadow.named_parameters():
            p.lerp_(src[name].detach().to(p.dtype), 1 - self.decay)
        for (_, b), (_, sb) in zip(model.named_buffers(), self.shadow.named_buffers(), strict=True):
            sb.copy_(b)

    def state_dict(self, *args, **kwargs):  # the shadow's keys, so it loads like the model
        return self.shadow.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True):
        return self.shadow.load_state_dict(state, strict=strict)


def _forget_other_precision(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state and refuses a second ``Accelerator`` with another
    mixed precision ("restart your runtime"); a process that trains one component in bf16 and then
    another in fp32 (a notebook, the tests) must be able to. Only the accelerator's settings are
    dropped — the process group (``PartialState``) is kept."""
    from accelerate.state import AcceleratorState

    shared = getattr(AcceleratorState, "_shared_state", {})
    if shared and shared.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def train(cfg: TrainConfig, model: torch.nn.Module, loss_fn: LossFn, batches: Iterator[dict], *,
          resume: bool = False, progress: bool = True, params: list[torch.nn.Parameter] | list[dict] | None = None,
          history: list[dict] | None = None) -> TrainResult:  # fmt: skip
    """Optimise ``model`` for ``cfg.steps`` optimizer steps of ``loss_fn(model, batch, step)``.

    ``batches`` must yield at least ``steps * grad_accum`` batches (from the resumed step on).
    Checkpoints go to ``cfg.output_dir/checkpoints``; the loss curve to ``loss.csv``. With
    ``cfg.max_minutes``, the run stops after the first step that ends past the budget (counted
    from the start of the enclosing :func:`budget_clock`, or from this call), saving a checkpoint there; ``--resume`` goes on.
    ``history`` (a new run's provenance, e.g. that of the checkpoint it started from) heads the
    history its checkpoints record; a resumed run keeps its checkpoint's.
    ``params`` (default: every parameter that requires grad) may be parameter groups, dicts with
    ``params`` and an optional ``lr_scale``: that group's rate is the schedule's times ``lr_scale``;
    with an optional ``name`` too, the history records each group's peak rate under that name.
    """
    from accelerate import Accelerator

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _forget_other_precision(cfg.mixed_precision)
    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                      cpu=not torch.cuda.is_available())  # fmt: skip
    warn_if_emulated_bf16(cfg.mixed_precision, acc.device)
    torch.manual_seed(cfg.seed)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    start, history = 0, list(history or [])  # one entry per run that led to a checkpoint, kept in its state.json
    if resume:
        ck = latest_checkpoint(out)
        if ck is None:
            raise ValueError(f"--resume: no checkpoint in {str(out / 'checkpoints')!r}")
        start = load_checkpoint(ck, model, ema)
        history = json.loads((ck / "state.json").read_text()).get("history", [])
        log.info("resumed from %s (step %d)", ck, start)
    elif latest_checkpoint(out) is not None:
        raise ValueError(
            f"output_dir {str(out)!r} already holds checkpoints; pass --resume or choose another output_dir"
        )
    groups = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    as_dicts = bool(groups) and isinstance(groups[0], dict)
    trainable = [p for g in groups for p in g["params"]] if as_dicts else groups
    group_lr = ({g.get("name", f"group{i}"): cfg.optim.lr * g.get("lr_scale", 1.0) for i, g in enumerate(groups)}
                if as_dicts and any("name" in g for g in groups) else None)  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
    warm = cfg.optim.warmup_steps if start == 0 or cfg.optim.rewarm_steps is None else cfg.optim.rewarm_steps
    warm = max(1, warm)  # a resumed run re-warms: AdamW's moments start from zero again
    model, opt = acc.prepare(model, opt)
    fwd = torch.compile(model) if cfg.compile else model
    if ema is not None:
        ema.to(acc.device)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    curve = (out / "loss.csv").open("a", newline="")
    writer = csv.writer(curve)
    if start == 0:
        curve.truncate(0)
    # a checkpoint copied into a new folder starts a curve; a resumed one keeps its columns
    columns = None
    if start > 0 and curve.tell() > 0:
        with (out / "loss.csv").open(newline="") as f:
            columns = next(csv.reader(f), None)
    bar = tqdm(
        total=cfg.steps, initial=start, desc=f"train {cfg.component}", disable=not progress or not acc.is_main_process
    )
    t0, step, logs, stopped = time.perf_counter(), start, {}, False
    deadline = None
    if cfg.max_minutes is not None:
        deadline = (_clock_origin if _clock_origin is not None else time.monotonic()) + 60 * cfg.max_minutes
    window: list[float] = []
    window_logs: dict[str, list[float]] = {}  # the loss function's extra terms, averaged over the window
    try:
        while step < cfg.steps:
            # learning rate from our own step count (a torch scheduler prepared by accelerate advances
            # once per process): warm-up from this run's start, the decay on the global step
            lr = cfg.optim.lr * min(1.0, (step - start + 1) / warm) * cfg.optim.factor(step, cfg.steps)
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            for _ in range(cfg.grad_accum):
                batch = next(batches)
                with acc.accumulate(model), acc.autocast():
                    loss, logs = loss_fn(fwd, batch, step)
                    for k, v in logs.items():
                        window_logs.setdefault(k, []).append(float(v))
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.optim.grad_clip:
                        acc.clip_grad_norm_(trainable, cfg.optim.grad_clip)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                window.append(float(loss.detach()))
            step += 1
            if ema is not None:
                ema.update(acc.unwrap_model(model))
            bar.update()
            stopped = deadline is not None and step < cfg.steps and time.monotonic() >= deadline
            if step % cfg.log_every == 0 or step == cfg.steps or stopped:
                # a term computed every k-th step (distillation) is the mean of the steps that had it
                row = {"step": step, "loss": sum(window) / len(window), "lr": lr,
                       "seconds": round(time.perf_counter() - t0, 2),
                       **{k: round(sum(v) / len(v), 6) for k, v in window_logs.items()}}  # fmt: skip
                if columns is None:
                    columns = list(row)
                    writer.writerow(columns)
                writer.writerow([row.get(c, "") for c in columns])
                curve.flush()
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                window, window_logs = [], {}
            if acc.is_main_process and (step % cfg.checkpoint_every == 0 or step == cfg.steps or stopped):
                this_run = {"steps": [start, step], "seconds": round(time.perf_counter() - t0, 1),
                            "batch_size": cfg.batch_size * cfg.grad_accum * acc.num_processes, "lr": cfg.optim.lr,
                            "lr_at_end": lr, "mixed_precision": cfg.mixed_precision,
                            "data": {k: getattr(cfg.data, k) for k in ("n_scenes", "seed", "size")},
                            "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
                if group_lr is not None:
                    this_run["group_lr"] = group_lr
                if cfg.optim.schedule != "constant":
                    o = cfg.optim
                    this_run["schedule"] = {"schedule": o.schedule, "decay_start": o.decay_start,
                                            "min_lr_ratio": o.min_lr_ratio, "steps": cfg.steps}  # fmt: skip
                save_checkpoint(out, step, acc.unwrap_model(model), ema,
                                {"component": cfg.component, "history": [*history, this_run]},
                                getattr(torch, cfg.checkpoint_dtype))  # fmt: skip
            if stopped:
                log.warning("max_minutes=%s reached: stopped at step %d of %d (checkpoint saved; --resume goes on)",
                            cfg.max_minutes, step, cfg.steps)  # fmt: skip
                break
    finally:
        bar.close()
        curve.close()
    return TrainResult(acc.unwrap_model(model), ema.shadow if ema is not None else None, step,
                       time.perf_counter() - t0, logs, stopped)  # fmt: skip

"""Joint (and ancestral) DDIM sampling of a factor graph, as pure functions of denoisers.

FG-DM (paper eqs. 4-6): at every denoising step every active factor takes a step, conditioned on
its parents' *current estimates*. Here a parent's current estimate is its latest predicted clean
latent x0 (factors are trained on clean parent latents, so this is the input they know). Factors
may run different numbers of steps: factor f with s_f steps takes its k-th step at global
iteration round(k S / s_f) of S = max(s_f) iterations, parents before children within an
iteration, so a child always sees an estimate of every active parent.

Ancestral sampling runs each factor to the end, in topological order, before its children start.

A factor may be held to a known path outside a region (:class:`KeepOutside`): after every step its
latent outside the region is replaced by the path's latent at the same noise level, the blended
latent diffusion recipe applied to a DDIM inversion, so that only the region is regenerated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .ddim import DDIMSchedule, ddim_step

# (x_t, t, {parent: current estimate or None}) -> eps
FactorDenoiser = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor | None]], torch.Tensor]


@dataclass
class KeepOutside:
    """Regenerate a factor only inside ``mask``; outside it, follow ``path``.

    ``mask``: (1 or B, 1, h, w) on the latent grid, 1 where the factor samples freely, 0 where it
    is held (values between blend). ``path``: the latents x_T, x_{t_1}, ..., x_{t_{N-1}} and the
    clean latent, ``N + 1`` in all for a schedule of N steps (what
    :meth:`~fgdm.pipelines.FactorGraphPipeline.invert_path` returns). After step i the held part
    of the latent is ``path[i + 1]`` and of its x0 estimate (what children see) ``path[-1]``.
    """

    mask: torch.Tensor
    path: list[torch.Tensor]

    def apply(self, i: int, x: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mask.to(x)
        return m * x + (1 - m) * self.path[i + 1].to(x), m * x0 + (1 - m) * self.path[-1].to(x0)


@dataclass
class FactorRun:
    """One factor to sample: its denoiser, initial noise and DDIM schedule (or a fixed value).

    ``fixed``: a given latent (an edited or user-supplied condition); the factor is then not
    sampled and its children see ``fixed`` throughout. ``keep``: regenerate only a region, the
    rest following a known path (:class:`KeepOutside`). ``eta``: this factor's DDIM eta (``None``:
    the ``eta`` given to :func:`sample_graph`).
    """

    name: str
    parents: tuple[str, ...]
    denoise: FactorDenoiser | None
    x: torch.Tensor | None = None
    schedule: DDIMSchedule | None = None
    fixed: torch.Tensor | None = None
    keep: KeepOutside | None = None
    eta: float | None = None
    seconds: float = field(default=0.0, init=False)  # time spent in this factor's denoiser

    def __post_init__(self) -> None:
        if self.fixed is None and (self.denoise is None or self.x is None or self.schedule is None):
            raise ValueError(f"factor {self.name!r}: give either fixed, or denoise + x + schedule")
        if self.keep is not None:
            if self.fixed is not None:
                raise ValueError(f"factor {self.name!r}: keep applies to a sampled factor, not a fixed one")
            want = len(self.schedule.timesteps) + 1
            if len(self.keep.path) != want:
                raise ValueError(f"factor {self.name!r}: keep.path holds {len(self.keep.path)} latents; "
                                 f"a schedule of {want - 1} steps needs {want} (x_T ... clean)")  # fmt: skip
            for what, t in (("keep.mask", self.keep.mask), ("keep.path", self.keep.path[0])):
                if t.shape[-2:] != self.x.shape[-2:]:
                    raise ValueError(f"factor {self.name!r}: {what} is {tuple(t.shape[-2:])}, "
                                     f"its latent {tuple(self.x.shape[-2:])}")  # fmt: skip
            m = self.keep.mask.to(self.x)
            self.x = m * self.x + (1 - m) * self.keep.path[0].to(self.x)
        if self.eta is not None and not 0 <= self.eta <= 1:
            raise ValueError(f"factor {self.name!r}: eta must be in [0, 1], got {self.eta!r}")


def step_plan(steps: list[int]) -> list[list[int]]:
    """For S = max(steps) global iterations, which factors (by index) step at each one."""
    total = max(steps)
    plan: list[list[int]] = [[] for _ in range(total)]
    for f, s in enumerate(steps):
        for k in range(s):
            plan[round(k * total / s)].append(f)
    return plan


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def _timed_step(run: FactorRun, i: int, estimates: dict, eta: float, generator) -> torch.Tensor:
    eta = eta if run.eta is None else run.eta
    sched = run.schedule
    x = run.x
    a_t, a_prev = sched.alphas[i].to(x), sched.alphas_prev[i].to(x)
    parents = {p: estimates.get(p) for p in run.parents}
    t0 = time.perf_counter()
    eps = run.denoise(x, sched.timesteps[i].expand(x.shape[0]).to(x.device), parents)
    _sync(eps)
    run.seconds += time.perf_counter() - t0
    noise = None
    if eta > 0:
        noise = torch.randn(x.shape, generator=generator, device=generator.device if generator else "cpu").to(x)
    run.x, x0 = ddim_step(x, eps, a_t, a_prev, eta, noise)
    if run.keep is not None:
        run.x, x0 = run.keep.apply(i, run.x, x0)
    return x0


def sample_graph(runs: list[FactorRun], *, mode: str = "joint", eta: float = 0.0,
                 generator: torch.Generator | None = None,
                 callback: Callable[[str, int], None] | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Sample every non-fixed factor; ``runs`` must be in topological order.

    Returns the final latent of every factor (fixed ones included). Parents that are not among
    ``runs`` are passed to the denoisers as ``None`` (the null condition). ``eta`` is DDIM's for
    every run that sets none of its own; the noise of every step with eta > 0 is drawn from
    ``generator`` in sampling order. ``callback(name, step)`` is called after each factor step.
    """
    if mode not in ("joint", "ancestral"):
        raise ValueError(f"mode must be 'joint' or 'ancestral', got {mode!r}")
    seen: set[str] = set()
    for r in runs:
        late = [p for p in r.parents if p in {x.name for x in runs} and p not in seen]
        if late:
            raise ValueError(f"factor {r.name!r} comes before its parents {late}; order the runs topologically")
        seen.add(r.name)
    estimates: dict[str, torch.Tensor | None] = {r.name: r.fixed for r in runs if r.fixed is not None}
    active = [r for r in runs if r.fixed is None]
    if mode == "ancestral":
        for r in active:
            for i in range(len(r.schedule.timesteps)):
                _timed_step(r, i, estimates, eta, generator)
                if callback is not None:
                    callback(r.name, i)
            estimates[r.name] = r.x
    elif active:
        counters = [0] * len(active)
        for group in step_plan([len(r.schedule.timesteps) for r in active]):
            for f in group:
                r = active[f]
                estimates[r.name] = _timed_step(r, counters[f], estimates, eta, generator)
                if callback is not None:
                    callback(r.name, counters[f])
                counters[f] += 1
    out = {r.name: r.fixed for r in runs if r.fixed is not None}
    out.update({r.name: r.x for r in active})
    return out


def guided(eps_null: torch.Tensor | None, eps_text_null_cond: torch.Tensor | None, eps_full: torch.Tensor,
           scale: float, cond_scale: float) -> torch.Tensor:  # fmt: skip
    """Classifier-free guidance over text and over conditions:
    eps = e(0,0) + cs (e(0,c) - e(0,0)) + s (e(t,c) - e(0,c)), where e(text, cond).

    With ``cond_scale == 1`` it is ordinary text CFG (``eps_null`` unused); with ``scale == 1``
    and ``cond_scale == 1`` it is ``eps_full``.
    """
    if scale == 1.0 and cond_scale == 1.0:
        return eps_full
    out = eps_text_null_cond + scale * (eps_full - eps_text_null_cond)
    if cond_scale != 1.0:
        out = out + (cond_scale - 1.0) * (eps_text_null_cond - eps_null)
    return out

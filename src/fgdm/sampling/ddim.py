"""DDIM (Song et al. 2021) as pure functions.

Notation: ``a_t`` is alpha-bar (the cumulative product of 1 - beta) at timestep t; the model
predicts the noise ``eps`` in ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> eps


@dataclass(frozen=True)
class DDIMSchedule:
    timesteps: torch.Tensor  # (N,) descending
    alphas: torch.Tensor  # (N,) a_t at each timestep
    alphas_prev: torch.Tensor  # (N,) a at the next (less noisy) timestep; the last is the final alpha
    alphas_cumprod: torch.Tensor  # (T,) a for every training timestep (to look a_t up from t)


def ddim_schedule(scheduler_config: dict, steps: int) -> DDIMSchedule:
    """Timesteps and alpha-bars for ``steps`` DDIM steps of a diffusers scheduler config
    (any SD scheduler: its betas, spacing and offset are honoured)."""
    from diffusers import DDIMScheduler

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    sched = DDIMScheduler.from_config(scheduler_config)
    if steps > sched.config.num_train_timesteps:
        raise ValueError(f"steps must be <= {sched.config.num_train_timesteps}, got {steps}")
    sched.set_timesteps(steps)
    ts = sched.timesteps.long()
    ac = sched.alphas_cumprod.float()
    prev = torch.cat([ac[ts[1:]], torch.as_tensor([float(sched.final_alpha_cumprod)])])
    return DDIMSchedule(ts, ac[ts], prev, ac)


def to_epsilon(model_out: torch.Tensor, x_t: torch.Tensor, a_t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Convert a model output to an epsilon prediction (SD 2.x 768 models predict v)."""
    if prediction_type == "epsilon":
        return model_out
    if prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0  =>  eps = sqrt(a) v + sqrt(1 - a) x_t
        return a_t.sqrt() * model_out + (1 - a_t).sqrt() * x_t
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor, a_prev: torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One DDIM step x_t -> x_prev; returns (x_prev, predicted x_0). eta = 0 is deterministic."""
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        if noise is None:
            raise ValueError("eta > 0 needs noise")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def cfg_denoiser(model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], cond: torch.Tensor,
                 uncond: torch.Tensor | None, scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:  # fmt: skip
    """Classifier-free guidance: one batched call on [uncond; cond], eps = u + scale (c - u).

    ``model(x, t, context)`` returns the raw model output. With ``uncond=None`` or ``scale == 1``
    the model runs once on ``cond`` only.
    """

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if uncond is None or scale == 1.0:
            return model(x, t, cond)
        out_u, out_c = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([uncond, cond])).chunk(2)
        return out_u + scale * (out_c - out_u)

    return denoise


def sample_ddim(denoise: Denoiser, x: torch.Tensor, schedule: DDIMSchedule, *, eta: float = 0.0,
                generator: torch.Generator | None = None,
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:  # fmt: skip
    """Run DDIM from x_T; ``denoise(x_t, t)`` returns eps. ``callback(i, x_prev, x0)`` after each step."""
    for i, t in enumerate(schedule.timesteps):
        a_t, a_prev = schedule.alphas[i].to(x), schedule.alphas_prev[i].to(x)
        eps = denoise(x, t.expand(x.shape[0]).to(x.device))
        noise = (
            torch.randn(x.shape, generator=generator, device=generator.device if generator else "cpu").to(x)
            if eta > 0
            else None
        )
        x, x0 = ddim_step(x, eps, a_t, a_prev, eta, noise)
        if callback is not None:
            callback(i, x, x0)
    return x


def invert_ddim(denoise: Denoiser, x: torch.Tensor, schedule: DDIMSchedule,
                callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:  # fmt: skip
    """DDIM inversion: run the deterministic sampler backwards, from a clean latent to x_T.

    The noise at each level is predicted at the next (noisier) timestep from the current latent
    (the usual approximation); :func:`sample_ddim` with the same schedule and denoiser then
    reconstructs ``x`` up to that approximation's error.
    """
    a_prev = schedule.alphas_prev[-1].to(x)  # the clean end of the schedule
    for i in range(len(schedule.timesteps) - 1, -1, -1):
        t, a_t = schedule.timesteps[i], schedule.alphas[i].to(x)
        eps = denoise(x, t.expand(x.shape[0]).to(x.device))
        x0 = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
        a_prev = a_t
        if callback is not None:
            callback(i, x)
    return x

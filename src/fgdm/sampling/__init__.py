"""Pure sampling functions over a denoiser callable (k-diffusion style)."""

from .ddim import cfg_denoiser, ddim_schedule, ddim_step, sample_ddim, to_epsilon

__all__ = ["cfg_denoiser", "ddim_schedule", "ddim_step", "sample_ddim", "to_epsilon"]

"""Pure sampling functions over a denoiser callable (k-diffusion style)."""

from .ddim import DDIMSchedule, cfg_denoiser, ddim_schedule, ddim_step, invert_ddim, sample_ddim, to_epsilon
from .joint import FactorRun, KeepOutside, guided, sample_graph, step_plan

__all__ = ["DDIMSchedule", "FactorRun", "KeepOutside", "cfg_denoiser", "ddim_schedule", "ddim_step", "guided", "invert_ddim", "sample_ddim", "sample_graph",
           "step_plan", "to_epsilon"]  # fmt: skip

"""fgdm: prompt-compliant, controllable text-to-image diffusion (FG-DM, TokenCompose, COW/SOW)."""

__version__ = "0.1.0"

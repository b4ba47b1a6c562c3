"""Training losses on attention maps: FG-DM's attention distillation and TokenCompose's grounding losses."""

from .distill import attention_distillation, resize_attention
from .grounding import grounding_losses, token_masks

__all__ = ["attention_distillation", "grounding_losses", "resize_attention", "token_masks"]

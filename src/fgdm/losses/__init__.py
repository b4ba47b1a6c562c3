"""Training losses on attention maps: FG-DM's attention distillation (TokenCompose's grounding losses join here)."""

from .distill import attention_distillation, resize_attention

__all__ = ["attention_distillation", "resize_attention"]

"""Attention processors: capture (probabilities or logits, with or without gradient) and modulation.

One shared layer serves FG-DM attention distillation, the TokenCompose grounding losses and SOW's
attention modulation. Only selected layers are touched; every other layer keeps its own (fast
SDPA) processor.
"""

from .control import (
    AttentionLayer,
    AttentionStore,
    CaptureProcessor,
    LayerSelector,
    attention_control,
    list_attention_layers,
)

__all__ = ["AttentionLayer", "AttentionStore", "CaptureProcessor", "LayerSelector", "attention_control",
           "list_attention_layers"]  # fmt: skip

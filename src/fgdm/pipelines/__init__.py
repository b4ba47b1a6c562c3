"""Pipelines: orchestration only (numbered steps over models, samplers and attention control)."""

from .text2image import Text2ImageOutput, Text2ImagePipeline

__all__ = ["Text2ImageOutput", "Text2ImagePipeline"]

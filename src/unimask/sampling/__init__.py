"""Samplers behind one ``Backbone`` interface: AR (KV cache), infill, diffusion (parallel, cached)."""

from unimask.sampling.ar import ARBackbone
from unimask.sampling.backbone import Backbone, Generation
from unimask.sampling.diffusion import DiffusionBackbone
from unimask.sampling.infill import infill, infill_prompt
from unimask.sampling.load import load_backbone

__all__ = ["ARBackbone", "Backbone", "DiffusionBackbone", "Generation", "infill", "infill_prompt", "load_backbone"]

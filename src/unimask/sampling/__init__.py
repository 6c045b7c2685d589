"""Samplers behind one ``Backbone`` interface: AR (KV cache), infill, diffusion (parallel, cached)."""

from unimask.sampling.ar import ARBackbone
from unimask.sampling.backbone import Backbone, Generation
from unimask.sampling.constraint import Constraint, TextConstraint
from unimask.sampling.diffusion import DiffusionBackbone
from unimask.sampling.infill import infill, infill_prompt
from unimask.sampling.load import load_backbone
from unimask.sampling.options import DecodingOptions, UnknownOptionError

__all__ = ["ARBackbone", "Backbone", "Constraint", "DecodingOptions", "DiffusionBackbone", "Generation",
           "TextConstraint", "UnknownOptionError", "infill", "infill_prompt", "load_backbone"]

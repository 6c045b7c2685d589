"""``load_backbone``: a unimask checkpoint or a local Hugging Face directory -> a ``Backbone``.

A unimask checkpoint's ``extra`` (the trainer's ``DecoderSpec``) picks the decoder:
``"ar"`` -> AR with KV cache; ``"block_diffusion"`` -> block diffusion with an exact KV cache;
``"masked_diffusion"`` -> LLaDA-style decoding with approximate caches; ``extra["shift"]`` marks a
shifted (Dream-style) diffusion model. A Hugging Face directory of a family ``unimask convert``
imports (Llama, Mistral, Qwen2/3, LLaDA, Dream) is converted once (cached) and loads as a unimask
checkpoint; any other causal one loads through ``transformers``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from unimask.model import load_checkpoint
from unimask.model.convert import ConvertError, ensure_checkpoint
from unimask.model.hf import HFCausalLM
from unimask.objectives.contract import DecoderSpec
from unimask.sampling.ar import ARBackbone
from unimask.sampling.backbone import Backbone
from unimask.sampling.diffusion import MODES, DiffusionBackbone
from unimask.sampling.options import DecodingOptions


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_backbone(path: str | Path, device: str | None = None, **decoding_defaults: Any) -> Backbone:
    """The backbone for ``path``; ``decoding_defaults`` are ``DecodingOptions`` for every generate call."""
    DecodingOptions().replace(**decoding_defaults)  # an unknown option fails before the model loads
    path = Path(path)
    device = device or default_device()
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path} is neither a unimask checkpoint nor a Hugging Face model dir (no config.json)")
    meta = json.loads(config.read_text())
    if "model" not in meta:
        try:
            path = ensure_checkpoint(path)
        except ConvertError:
            if meta.get("model_type", "").lower() in ("llada", "dream"):
                raise  # a diffusion model run as a causal LM would be silently wrong
            model = HFCausalLM(path, device=device)  # transformers runs it as it is (causal only)
            return ARBackbone(model, model.tokenizer, device=device, kind="hf", **decoding_defaults)
    model, tokenizer, extra = load_checkpoint(path, device=device)
    spec = DecoderSpec.from_extra(extra)
    if spec.backbone == "ar":
        return ARBackbone(model, tokenizer, device=device, **decoding_defaults)
    if spec.backbone in MODES:
        options = {"block_length": spec.block_size, **decoding_defaults}  # a given block_length overrides
        return DiffusionBackbone(model, tokenizer, mode=MODES[spec.backbone], device=device, shift=spec.shift,
                                 **options)
    raise ValueError(f"{path}: unknown backbone kind {spec.backbone!r} in config.json extra")

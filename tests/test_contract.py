"""Objectives follow one contract, and the decoder a mixture implies round-trips through checkpoint metadata."""

from __future__ import annotations

import json

import pytest

from unimask.config import ConfigError
from unimask.objectives import (
    DecoderSpec,
    Objective,
    build_objective,
    max_input_length,
    mixture_decoder,
    objective_names,
)


@pytest.mark.parametrize("name", objective_names())
def test_every_objective_follows_the_contract(name, tiny_tokenizer) -> None:
    obj = build_objective(name, tiny_tokenizer)
    assert isinstance(obj, Objective) and obj.reads in ("window", "trajectory")
    assert obj.max_length(64) >= 64 or obj.reads == "trajectory"
    spec = obj.decoder()
    assert DecoderSpec.from_extra(json.loads(json.dumps(spec.to_extra()))) == spec


def test_decoder_metadata_keeps_its_json_shape() -> None:
    assert DecoderSpec("ar").to_extra() == {"backbone": "ar"}
    assert DecoderSpec("block_diffusion", 8, "causal").to_extra() == {
        "backbone": "block_diffusion", "block_size": 8, "clean_attention": "causal"}
    assert DecoderSpec("masked_diffusion").to_extra() == {"backbone": "masked_diffusion"}
    assert DecoderSpec("masked_diffusion", shift=True).to_extra() == {"backbone": "masked_diffusion", "shift": True}
    assert DecoderSpec.from_extra({}) == DecoderSpec("ar")  # checkpoints without metadata decode AR


def test_mixture_decoder_and_fit(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    causal, block = build_objective("causal", tok), build_objective("block_diffusion", tok, block_size=8)
    assert mixture_decoder([causal, block]) == block.decoder()
    with pytest.raises(ConfigError, match="pick one"):
        mixture_decoder([block, build_objective("masked_diffusion", tok)])
    sft = build_objective("agent_sft_diffusion", tok)
    # the aligned layout grows a trajectory 2.5x (clean + noised copy + padded blocks)
    assert max_input_length(sft, 1024) == 1024 * 2 // 5 and sft.max_length(max_input_length(sft, 1000)) <= 1000

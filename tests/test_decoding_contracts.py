"""The sampler contracts: ``DecodingOptions`` (an unknown option is an error), the ``Constraint``
protocol (the agent's tool-call constraint satisfies it; sampling never imports the agent) and one
set of backbone kind names (``DecoderSpec.backbone``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import unimask.sampling
from unimask.agent.constraint import ToolCallConstraint
from unimask.agent.policy import ScriptedPolicy
from unimask.agent.protocol import CALL_HEAD, CALL_MID, CALL_TAIL, format_action, tool_call_schema
from unimask.agent.tools import answer_tool
from unimask.cli.evals import _decoding
from unimask.model import Transformer, save_checkpoint
from unimask.objectives.contract import DecoderSpec
from unimask.presets import model_preset
from unimask.sampling import (
    ARBackbone,
    Constraint,
    DecodingOptions,
    DiffusionBackbone,
    UnknownOptionError,
    load_backbone,
)
from unimask.tokenizer import special as sp


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_preset("tiny")).eval()


def _backbones(model, tok):
    return [ARBackbone(model, tok), DiffusionBackbone(model, tok, mode="block", block_length=4),
            DiffusionBackbone(model, tok, mode="full", block_length=4), ScriptedPolicy(lambda turns: "x", tok)]


def test_an_unknown_option_is_an_error_naming_it_and_the_valid_ones(model, tiny_tokenizer, tmp_path):
    for bb in _backbones(model, tiny_tokenizer):
        with pytest.raises(UnknownOptionError, match=r"unknown decoding option 'treshold'; valid options: "
                                                     r"temperature, .*threshold"):
            bb.generate(["x"], max_new_tokens=2, treshold=0.5)
    with pytest.raises(UnknownOptionError, match="options 'a', 'b'"):
        DecodingOptions().replace(a=1, b=2)
    with pytest.raises(UnknownOptionError, match="'stepz'"):
        ARBackbone(model, tiny_tokenizer, stepz=3)
    with pytest.raises(UnknownOptionError, match="'stepz'"):  # before the checkpoint is even looked for
        load_backbone(tmp_path / "missing", stepz=3)
    with pytest.raises(UnknownOptionError, match="'stepz'"):  # the CLI's --decoding.NAME
        _decoding({"steps": "64", "stepz": "1"})
    assert _decoding({"steps": "64", "threshold": "null"}) == {"steps": 64, "threshold": None}


def test_every_backbone_accepts_the_whole_table(model, tiny_tokenizer):
    """One settings table drives any backbone: options a backbone does not read are accepted."""
    every = {"temperature": 0.0, "top_k": 0, "top_p": 0.9, "seed": 1, "forced_tokens": False, "stop_token_ids": [],
             "threshold": 0.9, "steps": None, "block_length": 4, "remasking": "low_confidence", "cache": "dual",
             "prefix_cache": True}
    assert set(every) == {f for f in DecodingOptions.__dataclass_fields__}
    for bb in _backbones(model, tiny_tokenizer):
        assert len(bb.generate(["x = 1"], max_new_tokens=2, **every)) == 1


def test_options_defaults_and_none():
    d = DecodingOptions()
    assert (d.threshold, d.remasking, d.cache, d.temperature) == (0.9, "low_confidence", "dual", 0.0)
    warm = d.replace(temperature=0.7)
    assert warm.replace(temperature=None).temperature == 0.7  # None keeps the backbone's default
    assert d.replace(threshold=None, steps=None).threshold is None  # None is LLaDA's fixed schedule


def test_the_tool_call_constraint_satisfies_the_protocol():
    c = ToolCallConstraint(tool_call_schema([answer_tool()]))
    assert isinstance(c, Constraint)
    text = format_action("answer", {"text": "a"})
    assert text == sp.TOOL_CALL_START + CALL_HEAD + "answer" + CALL_MID + '"text": "a"' + CALL_TAIL + sp.TOOL_CALL_END
    assert c.is_complete(c.state_of(text)) and c.complete(text)


def test_sampling_imports_nothing_from_the_agent():
    src = Path(unimask.sampling.__file__).parent
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith(("unimask.agent", "unimask.envs")) for n in names), path


@pytest.mark.parametrize("spec", [DecoderSpec("ar"), DecoderSpec("block_diffusion", block_size=4),
                                  DecoderSpec("masked_diffusion")])
def test_backbone_kind_is_the_decoder_spec_name(spec, tiny_tokenizer, tmp_path):
    path = save_checkpoint(tmp_path / spec.backbone, Transformer(model_preset("tiny")), tiny_tokenizer,
                           spec.to_extra())
    backbone = load_backbone(path, device="cpu", threshold=0.5)
    assert backbone.kind == spec.backbone and backbone.defaults.threshold == 0.5
    assert json.loads((path / "config.json").read_text())["extra"]["backbone"] == backbone.kind


def test_a_block_length_given_at_load_overrides_the_checkpoints(tiny_tokenizer, tmp_path):
    path = save_checkpoint(tmp_path / "bd", Transformer(model_preset("tiny")), tiny_tokenizer,
                           DecoderSpec("block_diffusion", block_size=8).to_extra())
    assert load_backbone(path, device="cpu").block_length == 8
    backbone = load_backbone(path, device="cpu", block_length=4)
    assert backbone.block_length == 4
    assert backbone.generate(["x = 1"], max_new_tokens=8)[0].info["blocks"] <= 2

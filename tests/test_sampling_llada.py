"""Cross-check: our diffusion sampler reproduces LLaDA's public ``generate`` (low-confidence
remasking, temperature 0) on the same logits function.

The fixture holds only numbers: a toy mask predictor's weights, the inputs, and the outputs that
LLaDA's own ``generate`` produced for them (run outside this repository; see the fixture's
``source``). The toy's logits depend on the whole sequence, so the unmasking order matters.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from unimask.sampling import DiffusionBackbone

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "llada_generate.json").read_text())


class ToyMaskPredictor(torch.nn.Module):
    """``model(ids, attention) -> logits`` with the fixture's weights (bidirectional by construction)."""

    def __init__(self, fx: dict):
        super().__init__()
        self.E = torch.nn.Parameter(torch.tensor(fx["E"]))
        self.W = torch.tensor(fx["W"])
        self.P = torch.tensor(fx["P"])
        self.mask_id = fx["mask_id"]
        self.cfg = types.SimpleNamespace(max_seq_len=64)

    def forward(self, x, attention=None, kv_cache=None, commit=True):
        L = x.shape[1]
        e = self.E[x]
        i = torch.arange(L)
        w = self.P[(i[:, None] - i[None, :]).abs().clamp(max=31)]
        h = torch.tanh(e + torch.einsum("ij,bjd->bid", w, e) / L)
        logits = h @ self.W
        logits[..., self.mask_id] = -1e9
        return logits


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"gen{c['gen_length']}-block{c['block_length']}-steps{c['steps']}")
def test_matches_llada_generate(case):
    tok = types.SimpleNamespace(mask_id=FIXTURE["mask_id"], eos_id=10_000, pad_id=10_001, eom_id=10_002,
                                decode=lambda ids: " ".join(map(str, ids)))
    backbone = DiffusionBackbone(ToyMaskPredictor(FIXTURE).eval(), tok, mode="full")
    with torch.no_grad():
        gen = backbone.generate([""], prompt_ids=[case["prompt"]], max_new_tokens=case["gen_length"],
                                block_length=case["block_length"], steps=case["steps"], threshold=None,
                                cache="none", remasking="low_confidence", temperature=0.0)[0]
    assert case["prompt"] + gen.token_ids == case["output"]
    assert gen.nfe == case["steps"]

"""The transformer: leak tests for every attention structure, KV cache exactness, checkpoints, HF parity."""

from __future__ import annotations

import json

import pytest
import torch

from unimask.model import AttentionStructure, CheckpointError, Transformer, load_checkpoint, save_checkpoint
from unimask.model.attention import positions_from_segments
from unimask.presets import model_preset

V = 512


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_preset("tiny", n_kv_heads=2)).eval()


def _logits(model: Transformer, ids: torch.Tensor, s: AttentionStructure) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, s)


def assert_leak_free(model: Transformer, s: AttentionStructure, seed: int = 0) -> None:
    """For every query i and key j: perturbing j changes logits at i iff the mask allows i -> j.

    (Reachability through intermediate tokens also counts: attention composes over layers, so we
    check against the transitive closure of the mask.)
    """
    g = torch.Generator().manual_seed(seed)
    L = s.seq_len
    ids = torch.randint(3, V, (1, L), generator=g)
    base = _logits(model, ids, s)
    mask = s.dense_mask()[0, 0].clone()
    reach = mask.clone()
    for _ in range(len(model.layers)):  # paths of length <= n_layers
        reach = reach | ((reach.float() @ mask.float()) > 0)
    for j in range(L):
        pert = ids.clone()
        pert[0, j] = (pert[0, j] + 1 - 3) % (V - 3) + 3
        diff = (_logits(model, pert, s) - base).abs().amax(-1)[0]
        for i in range(L):
            if reach[i, j]:
                assert diff[i] > 1e-6, f"position {i} should see token {j}"
            else:
                assert diff[i] == 0, f"token {j} leaked into position {i}"


STRUCTURES = {
    "causal": AttentionStructure.causal(1, 10),
    "bidirectional": AttentionStructure.bidirectional(1, 10),
    "prefix": AttentionStructure.prefix([4], 10),
    "documents": AttentionStructure.from_documents(torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])),
    "turns": AttentionStructure.block_causal(torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])),
    "block_diffusion": AttentionStructure.block_diffusion(1, 6, 2),
    "padding": AttentionStructure.pad_to(AttentionStructure.causal(1, 7), 10),
    # aligned agent layout: clean causal 0..7, then a noised copy of positions 5..7 (block id 5)
    "aligned_action": AttentionStructure(
        torch.zeros(1, 11, dtype=torch.long),
        torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 5, 5, 5]]),
        torch.tensor([[False] * 8 + [True] * 3]),
        torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7]]),
    ),
}


def test_predecessors_by_hand():
    index, found = STRUCTURES["aligned_action"].predecessors()
    # clean tokens: the previous index; noised 5 -> clean 4 (block start); noised 6, 7 -> noised 5, 6
    assert index[0].tolist()[1:] == [0, 1, 2, 3, 4, 5, 6, 4, 8, 9]
    assert found[0].tolist() == [False] + [True] * 10
    index, found = STRUCTURES["documents"].predecessors()
    assert found[0].tolist() == [False, True, True, False, True, True, True, False, True, True]
    index, found = STRUCTURES["block_diffusion"].predecessors(q_start=0, chunk=4)  # x_t 0..5, x_0 6..11
    assert index[0].tolist()[1:6] == [0, 7, 2, 9, 4]  # x_t block starts read the clean token before
    assert found[0].tolist() == [False, True, True, True, True, True, False] + [True] * 5
    _, found = STRUCTURES["padding"].predecessors()
    assert found[0].tolist()[7:] == [False, False, False]


@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("q_start", [0, 3])
def test_predecessors_from_the_callers_mask_match(name, q_start):
    s = STRUCTURES[name]
    mask = s.dense_mask(slice(q_start, None))
    for chunk in (2, 1024):
        for a, b in zip(s.predecessors(q_start, chunk), s.predecessors(q_start, chunk, mask=mask), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_structures_leak_free(any_model, name):
    assert_leak_free(any_model, STRUCTURES[name])


def test_block_diffusion_rule_by_hand():
    s = AttentionStructure.block_diffusion(1, 4, 2)  # x_t = 0..3, x_0 = 4..7, blocks {0,1},{2,3}
    m = s.dense_mask()[0, 0].int().tolist()
    assert m[0] == [1, 1, 0, 0, 0, 0, 0, 0]  # x_t block 0: itself only
    assert m[2] == [0, 0, 1, 1, 1, 1, 0, 0]  # x_t block 1: itself + x_0 block 0
    assert m[4] == [0, 0, 0, 0, 1, 1, 0, 0]  # x_0 block 0: block-causal, never noisy tokens
    assert m[7] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_positions_restart_per_document():
    assert positions_from_segments(torch.tensor([[0, 0, 1, 1, 1, 2]])).tolist() == [[0, 1, 0, 1, 2, 0]]


def test_causal_fast_path_matches_structure(any_model):
    ids = torch.randint(0, V, (2, 17))
    torch.testing.assert_close(_logits(any_model, ids, AttentionStructure.causal(2, 17)), any_model(ids), atol=0, rtol=0)


def test_ar_kv_cache_matches_full_forward(any_model):
    ids = torch.randint(0, V, (2, 24))
    full = any_model(ids)
    cache = any_model.new_kv_cache(2, 32)
    parts = [any_model(ids[:, :7], kv_cache=cache)]
    for t in range(7, 24):
        parts.append(any_model(ids[:, t : t + 1], kv_cache=cache))
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
    cache.truncate(10)
    torch.testing.assert_close(any_model(ids[:, 10:12], kv_cache=cache), full[:, 10:12], atol=1e-5, rtol=0)
    cache.truncate(10)
    cache.reserve(64)  # grown in place: what was cached stays
    assert cache.max_len == 64 and cache.length == 10
    last = any_model(ids[:, 10:24], kv_cache=cache, logits_to_keep=1)
    torch.testing.assert_close(last, full[:, 23:24], atol=1e-5, rtol=0)


def test_block_diffusion_cache_matches_training_layout(any_model):
    """A noisy block against an exact cache of the clean (causal) context == the x_t ⊕ x_0 layout."""
    L, bs = 12, 4
    x0 = torch.randint(3, V, (1, L))
    noisy_block = x0[:, 8:12].clone()
    noisy_block[0, 1] = 2
    # training layout: clean causal 0..11, noisy copy of block [8,12) with block id 8
    pos = torch.arange(L)
    s = AttentionStructure(
        torch.zeros(1, L + bs, dtype=torch.long),
        torch.cat([pos, torch.full((bs,), 8)])[None],
        torch.cat([torch.zeros(L, dtype=torch.bool), torch.ones(bs, dtype=torch.bool)])[None],
        torch.cat([pos, pos[8:]])[None],
    )
    ref = _logits(any_model, torch.cat([x0, noisy_block], 1), s)[:, L:]
    cache = any_model.new_kv_cache(1, 32)
    with torch.no_grad():
        any_model(x0[:, :8], kv_cache=cache)
        got = any_model(noisy_block, s[L:], kv_cache=cache, commit=False)
    assert cache.length == 8
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_flex_matches_sdpa(model):
    pytest.importorskip("torch.nn.attention.flex_attention")
    flex = Transformer(model_preset("tiny", n_kv_heads=2, attn_impl="flex")).eval()
    flex.load_state_dict(model.state_dict())
    # lengths that are not multiples of the 128 block size catch masks built for the wrong length
    s = AttentionStructure.block_diffusion(2, 70, 7)
    ids = torch.randint(0, V, (2, 140))
    with torch.no_grad():
        torch.testing.assert_close(flex(ids, s), model(ids, s), atol=1e-5, rtol=0)


def test_checkpoint_roundtrip_and_errors(model, tiny_tokenizer, tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", model, tiny_tokenizer, {"backbone": "ar"})
    loaded, tok, extra = load_checkpoint(path)
    ids = torch.randint(0, V, (1, 9))
    torch.testing.assert_close(loaded(ids), model(ids), atol=0, rtol=0)
    assert extra == {"backbone": "ar"} and tok.vocab_size == tiny_tokenizer.vocab_size
    # mismatched config
    meta = json.loads((path / "config.json").read_text())
    meta["model"]["d_model"] = 128
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)
    # truncated weights
    path = save_checkpoint(tmp_path / "ckpt2", model, tiny_tokenizer)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_hf_export_import_parity(model, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from unimask.model.hf import HFCausalLM, export_hf, import_hf

    d = export_hf(model, tiny_tokenizer, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(d).eval()
    assert hf.config.model_type == "llama"
    ids = torch.randint(0, V, (2, 15))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-4, rtol=0)
        back, _ = import_hf(d)
        torch.testing.assert_close(back(ids), model(ids), atol=1e-4, rtol=0)
        wrapped = HFCausalLM(d)
        s = AttentionStructure.pad_to(AttentionStructure.causal(2, 12), 15)  # right padding as its own doc
        torch.testing.assert_close(wrapped(ids, s)[:, :12], model(ids, s)[:, :12], atol=1e-4, rtol=0)
        with pytest.raises(ValueError, match="causal attention only"):
            wrapped(ids, AttentionStructure.bidirectional(2, 15))


def test_third_party_causal_model_behind_backbone(tiny_tokenizer, tmp_path):
    """A tiny random GPT-2 (not Llama) saved locally serves through the same generate() interface."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from unimask.sampling import load_backbone

    d = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=tiny_tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2,
                               n_positions=128)).save_pretrained(d)
    PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer.hf).save_pretrained(d)
    backbone = load_backbone(d, device="cpu")
    a, b = backbone.generate(["def f(x):", "import os"], max_new_tokens=6)
    single = backbone.generate(["import os"], max_new_tokens=6)[0]
    assert backbone.kind == "hf" and b.token_ids == single.token_ids and a.nfe >= 1


@pytest.mark.parametrize("chunk", [None, 5])
def test_fused_head_loss_matches_logits_then_loss(any_model, chunk):
    """The training loss through the fused head (no logits, unscored rows skipped, chunked) equals
    the objectives' convention on full logits, in value and in every parameter's gradient, on a
    block-diffusion layout whose clean half is unscored."""
    from unimask.model.fused_loss import linear_cross_entropy
    from unimask.objectives.example import IGNORE, example_loss

    torch.manual_seed(1)
    model = any_model.train()
    B, L = 2, 12
    s = AttentionStructure.block_diffusion(B, L, 4)
    ids = torch.randint(3, V, (B, 2 * L))
    labels = torch.randint(3, V, (B, 2 * L))
    labels[:, L:] = IGNORE  # the clean copy is not scored
    labels[0, 2] = IGNORE
    weights = torch.rand(B, 2 * L) * (labels != IGNORE)
    weights[1, 5] = 0.0

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = example_loss(model(ids, s), labels, weights).mean()
    ref_grads = grads(ref)
    if chunk is None:
        got = model(ids, s, labels=labels, loss_weights=weights)
    else:  # the chunk loop itself, with chunks that do not divide the scored rows
        import unimask.model.transformer as transformer

        orig = transformer.linear_cross_entropy
        transformer.linear_cross_entropy = lambda *a: linear_cross_entropy(*a, chunk=chunk)
        try:
            got = model(ids, s, labels=labels, loss_weights=weights)
        finally:
            transformer.linear_cross_entropy = orig
    got_grads = grads(got)
    model.eval()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    with pytest.raises(ValueError, match="loss_weights"):
        model(ids, s, labels=labels)

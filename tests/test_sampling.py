"""Samplers: AR batching and cache, infill formats, diffusion schedules, caches and NFE accounting."""

from __future__ import annotations

import pytest
import torch

from unimask.model import AttentionStructure, Transformer
from unimask.presets import model_preset
from unimask.sampling import ARBackbone, DiffusionBackbone, infill, infill_prompt
from unimask.sampling.decoding import filter_logits
from unimask.sampling.diffusion import choose_commits, num_transfer_tokens


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_preset("tiny")).eval()


def reference_greedy(model, ids: list[int], n: int) -> list[int]:
    """Greedy decoding by full re-forward every step (no cache, no padding)."""
    x = torch.tensor([ids])
    out = []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(x)[0, -1].argmax())
            out.append(t)
            x = torch.cat([x, torch.tensor([[t]])], 1)
    return out


def test_ar_matches_uncached_reference_in_a_padded_batch(any_model, tiny_tokenizer):
    ar = ARBackbone(any_model, tiny_tokenizer)
    prompts = ["def f(x):\n    return", "import json", "class A:\n    pass\n"]
    gens = ar.generate(prompts, max_new_tokens=8, stop_token_ids=[])
    for p, g in zip(prompts, gens, strict=True):
        assert g.token_ids == reference_greedy(any_model, tiny_tokenizer.encode(p), 8)
        assert g.nfe == 8 and g.stop_reason == "length"


def test_ar_stop_strings_seeds_and_processor(model, tiny_tokenizer):
    ar = ARBackbone(model, tiny_tokenizer)
    g = ar.generate(["x = 1"], max_new_tokens=12, stop_token_ids=[])[0]
    stop = g.text[3:6]
    cut = ar.generate(["x = 1"], max_new_tokens=12, stop=[stop], stop_token_ids=[])[0]
    assert cut.stop_reason == "stop" and stop not in cut.text and g.text.startswith(cut.text)
    a = ar.generate(["x = 1"], max_new_tokens=10, temperature=1.0, seed=5)[0]
    b = ar.generate(["x = 1"], max_new_tokens=10, temperature=1.0, seed=5)[0]
    assert a.token_ids == b.token_ids
    banned = g.token_ids[0]

    def ban(history, logits):
        logits[:, banned] = float("-inf")
        return logits

    assert ar.generate(["x = 1"], max_new_tokens=4, logits_processor=ban)[0].token_ids[0] != banned
    seen: list[str] = []
    ar.generate(["x = 1"], max_new_tokens=5, stop_token_ids=[], on_update=lambda i, t: seen.append(t))
    assert len(seen) == 5


def test_filter_logits_top_k_top_p():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    probs = logits.softmax(-1)[0]
    kept = ~torch.isinf(filter_logits(logits, top_p=float(probs[0]) + 1e-3)[0])
    assert kept.tolist() == [True, True, False, False]


def test_infill_prompts():
    assert infill_prompt("a", "c", "codegen2") == "a<mask_1>c<|endoftext|><sep><mask_1>"
    assert infill_prompt("a", "c", "fim_psm") == "<fim_prefix>a<fim_suffix>c<fim_middle>"
    assert infill_prompt("a", "c", "fim_spm") == "<fim_prefix><fim_suffix>c<fim_middle>a"


def test_schedule_matches_llada():
    k = num_transfer_tokens(torch.tensor([10, 3]), 4)
    assert k.tolist() == [[3, 3, 2, 2], [1, 1, 1, 0]]


def test_choose_commits_low_confidence_and_threshold():
    logits = torch.log(torch.tensor([[[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]]))
    x = torch.tensor([[9, 9, 9]])
    masked = torch.tensor([[True, True, True]])
    new, commit = choose_commits(logits, x, masked, torch.tensor([1]), None, "low_confidence", 0.0, None)
    assert commit.tolist() == [[True, False, False]] and new.tolist() == [[0, 9, 9]]
    new, commit = choose_commits(logits, x, masked, None, 0.7, "low_confidence", 0.0, None)
    assert commit.tolist() == [[True, False, True]] and new.tolist() == [[0, 9, 1]]
    _, commit = choose_commits(logits, x, masked, None, 0.99, "low_confidence", 0.0, None)
    assert int(commit.sum()) == 1  # at least one token per step


def _cut(tok, ids: list[int]) -> list[int]:
    return ids[: next((i for i, t in enumerate(ids) if t in (tok.eos_id, tok.pad_id)), len(ids))]


def _uncached_block_decode(model, tok, prompt: list[int], n: int, bl: int, shift: bool) -> list[int]:
    """Block diffusion by re-forwarding the x_0 + noisy-block layout every step, one commit per step
    (the most confident masked position). ``shift``: block position j reads the logits of j - 1."""
    x0 = list(prompt)
    P = len(prompt)
    with torch.no_grad():
        for s in range(P, P + n, bl):
            block = [tok.mask_id] * bl
            while tok.mask_id in block:
                L = len(x0)
                pos = torch.arange(L)
                st = AttentionStructure(
                    torch.zeros(1, L + bl, dtype=torch.long),
                    torch.cat([pos, torch.full((bl,), s)])[None],
                    torch.cat([torch.zeros(L, dtype=torch.bool), torch.ones(bl, dtype=torch.bool)])[None],
                    torch.cat([pos, torch.arange(s, s + bl)])[None],
                )
                out = model(torch.tensor([x0 + block]), st)[0]
                logits = (out[L - 1 : L + bl - 1] if shift else out[L:]).clone()
                logits[..., tok.mask_id] = float("-inf")
                conf, arg = logits.softmax(-1).max(-1)
                conf = torch.where(torch.tensor(block) == tok.mask_id, conf, torch.tensor(-1.0))
                j = int(conf.argmax())
                block[j] = int(arg[j])
            x0 += block
    return x0[P:]


def test_block_diffusion_cached_decoding_equals_uncached(any_model, tiny_tokenizer):
    """The exact-cache block sampler commits the same tokens as an uncached re-forward of the
    x_0 ⊕ noisy-block layout, step for step (one token per step)."""
    tok = tiny_tokenizer
    d = DiffusionBackbone(any_model, tok, mode="block", block_length=4)
    prompt = tok.encode("def f(x):")
    g = d.generate(["def f(x):"], max_new_tokens=8, threshold=None, stop_token_ids=[])[0]
    assert g.token_ids == _cut(tok, _uncached_block_decode(any_model, tok, prompt, 8, 4, shift=False))
    assert g.nfe == 8  # 4 steps per block, the clean-block commit folded into the next block's first step


def test_shifted_block_decoding_reads_each_token_from_its_predecessor(any_model, tiny_tokenizer):
    """``shift=True``: the cached sampler equals an uncached re-forward whose logits for block position
    j come from position j - 1 (the clean context's last token for j = 0). With one-token blocks that
    is exactly greedy AR decoding of the same model."""
    tok = tiny_tokenizer
    prompt = tok.encode("def f(x):")
    one = DiffusionBackbone(any_model, tok, mode="block", block_length=1, shift=True)
    g1 = one.generate(["def f(x):"], max_new_tokens=6, threshold=None, stop_token_ids=[])[0]
    assert g1.token_ids == _cut(tok, reference_greedy(any_model, prompt, 6))
    d = DiffusionBackbone(any_model, tok, mode="block", block_length=4, shift=True)
    g = d.generate(["def f(x):"], max_new_tokens=8, threshold=None, stop_token_ids=[])[0]
    assert g.token_ids == _cut(tok, _uncached_block_decode(any_model, tok, prompt, 8, 4, shift=True))


def test_shifted_full_diffusion_is_exact_and_needs_a_prefix(model, tiny_tokenizer):
    """Dream-style decoding: the masked region's logits are the model's outputs one position earlier."""
    tok = tiny_tokenizer
    d = DiffusionBackbone(model, tok, mode="full", block_length=4, shift=True)
    g = d.generate(["import os"], max_new_tokens=4, threshold=None, steps=4, cache="none", stop_token_ids=[])[0]
    x = tok.encode("import os") + [tok.mask_id] * 4
    P = len(x) - 4
    with torch.no_grad():
        while tok.mask_id in x:
            logits = model(torch.tensor([x]))[0, P - 1 : P + 3].clone()
            logits[..., tok.mask_id] = float("-inf")
            conf, arg = logits.softmax(-1).max(-1)
            conf = torch.where(torch.tensor(x[P:]) == tok.mask_id, conf, torch.tensor(-1.0))
            j = int(conf.argmax())
            x[P + j] = int(arg[j])
    assert g.token_ids == _cut(tok, x[P:])
    for cache in ("prefix", "dual"):
        c = d.generate(["import os"], max_new_tokens=4, threshold=None, steps=4, cache=cache, stop_token_ids=[])[0]
        assert c.token_ids[:1] == g.token_ids[:1] and c.nfe == 4
    with pytest.raises(ValueError, match="shifted"):
        d.infill("", "x = 1", middle_tokens=4)


def test_parallel_decoding_cuts_nfe(model, tiny_tokenizer):
    d = DiffusionBackbone(model, tiny_tokenizer, mode="block", block_length=8)
    slow = d.generate(["x"], max_new_tokens=16, threshold=None)[0]
    fast = d.generate(["x"], max_new_tokens=16, threshold=0.0)[0]
    assert fast.nfe * 4 <= slow.nfe and fast.info["tokens_per_step"] >= 4


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_full_diffusion_caches_run_and_count(any_model, tiny_tokenizer, cache):
    d = DiffusionBackbone(any_model, tiny_tokenizer, mode="full", block_length=4)
    g = d.generate(["def f("], max_new_tokens=8, threshold=None, steps=8, cache=cache)[0]
    assert g.nfe == 8 and tiny_tokenizer.mask_id not in g.token_ids


def test_full_diffusion_without_cache_is_exact_llada(model, tiny_tokenizer):
    """cache='none' re-forwards everything; 'prefix' with one block equals it on the first step."""
    d = DiffusionBackbone(model, tiny_tokenizer, mode="full", block_length=8)
    a = d.generate(["import os"], max_new_tokens=8, threshold=None, steps=8, cache="none")[0]
    b = d.generate(["import os"], max_new_tokens=8, threshold=None, steps=8, cache="prefix")[0]
    assert a.token_ids[:1] == b.token_ids[:1]


def test_native_and_ar_infill_return_middle_only(model, tiny_tokenizer):
    ar = ARBackbone(model, tiny_tokenizer)
    g = infill(ar, "def f(x):\n    return ", "\n", "codegen2", max_new_tokens=6)
    assert "<sep>" not in g.text and "def f" not in g.text
    d = DiffusionBackbone(model, tiny_tokenizer, mode="full")
    g = infill(d, "def f(x):\n    return ", "\n", "native", max_new_tokens=5)
    assert len(g.token_ids) <= 5 and g.nfe >= 1
    with pytest.raises(ValueError, match="no native infilling"):
        infill(ar, "a", "b", "native")


def test_context_overflow_is_a_clear_error(model, tiny_tokenizer):
    ar = ARBackbone(model, tiny_tokenizer)
    with pytest.raises(ValueError, match="exceeds the model context"):
        ar.generate(["x " * 300], max_new_tokens=10)


def test_tool_call_constraint_keeps_every_commit_valid(model, tiny_tokenizer, tmp_path):
    from unimask.agent.constraint import ToolCallConstraint
    from unimask.agent.protocol import parse_action, tool_call_schema
    from unimask.agent.tools import BM25Index, answer_tool, open_tool, search_tool

    docs = [{"id": "json.dumps", "title": "json.dumps", "text": "serialize objects"}]
    tools = [search_tool(BM25Index(docs, tmp_path), lambda d: d["text"]), open_tool(docs, lambda d: d["text"]),
             answer_tool()]
    c = ToolCallConstraint(tool_call_schema(tools), max_think_chars=10)
    assert c.valid('<think>hm</think><tool_call>{"name": "sea')
    assert c.valid('<tool_call>{"name": "search", "arguments": {"query": "a", "k": 3}}</tool_')
    for bad in ('<tool_call>{"name": "fly', '<tool_call>{"name": f', '<tool_call>{"name": "search", "arguments": {"k": "3"',
                '<tool_call>{"name": "search", "arguments": {"k": 3}}', '<tool_call>{"name": "answer", "arguments": '
                '{"text": "a", ', '<tool_call>{"name": "answer", "arguments": {"text": "a",', '<think>' + "x" * 11, '<tool_call>{"name": "answer", "arguments": {"text": "<|end',
                '<tool_call>{"name": "search", "arguments": {"query": "a</think>'):
        assert not c.valid(bad), bad
    assert c.complete('<tool_call>{"name": "answer", "arguments": {"text": "a"}}</tool_call>')
    seen: list = []

    class Spy(ToolCallConstraint):
        def commit_run(self, state, *a, **k):
            out = super().commit_run(state, *a, **k)
            seen.append(out[1])
            return out

    spy = Spy(tool_call_schema(tools), max_think_chars=10)
    prompt = ["<|user|>q<|end|><|assistant|>"]
    for bb in (ARBackbone(model, tiny_tokenizer), DiffusionBackbone(model, tiny_tokenizer, mode="block", block_length=8)):
        g = bb.generate(prompt, max_new_tokens=96, stop=["<|end|>"], constraint=spy)[0]
        assert c.valid(g.text), g.text  # an untrained model, yet every committed prefix is valid
        if c.complete(g.text):
            assert parse_action(g.text, tools).ok
    assert seen and all(st is not None for st in seen)  # no run ever leaves the valid prefixes
    gen = torch.Generator().manual_seed(0)  # greedy shortcut == argmax of the full candidate mask
    for state in ("", "<think>hm</think>", '<tool_call>{"name": "', '<tool_call>{"name": "search", "arguments": {"'):
        for _ in range(5):
            row = torch.randn(tiny_tokenizer.vocab_size, generator=gen)
            st = c.state_of(state)
            full = c.mask_logits(row[None], [st], tiny_tokenizer)[0]
            assert c.best_valid(st, row, tiny_tokenizer) == int(full.argmax())


def test_tool_call_constraint_keeps_numbers_within_schema_bounds():
    from unimask.agent.constraint import ToolCallConstraint

    args = {"type": "object", "properties": {"k": {"type": "integer", "minimum": 1, "maximum": 5},
                                             "t": {"type": "number", "minimum": -1.5, "maximum": 2}},
            "required": ["k"]}
    c = ToolCallConstraint({"oneOf": [{"properties": {"name": {"const": "f"}, "arguments": args}}]})
    call = '<tool_call>{"name": "f", "arguments": {'
    for ok in ('"k": 1', '"k": 5}}</tool_call>', '"k": 3, "t": -1.5}}', '"k": 3, "t": 2', '"k": 3, "t": 1.99',
               '"k": 3, "t": -1.', '"k": 3, "t": -'):
        assert c.valid(call + ok), ok
    # "-" under minimum 1; "0" cannot grow into 1..5; 6 and 51 are past the maximum; -2 and 2.5 out of range
    for bad in ('"k": -', '"k": 0', '"k": 6', '"k": 51', '"k": 3, "t": -2', '"k": 3, "t": 2.5',
                '"k": 3, "t": 3'):
        assert not c.valid(call + bad), bad
    assert c.complete(call + '"k": 2}}</tool_call>') and not c.complete(call + '"k": 9}}</tool_call>')


class _Biased(torch.nn.Module):
    """A model whose logits favour a few tokens: an untrained model that still closes its tool calls."""

    def __init__(self, inner: Transformer, bias: torch.Tensor):
        super().__init__()
        self.inner, self.cfg = inner, inner.cfg
        self.register_buffer("bias", bias)

    def new_kv_cache(self, *a, **k):
        return self.inner.new_kv_cache(*a, **k)

    def forward(self, *a, **k):
        return self.inner(*a, **k) + self.bias


def _tools(tmp_path):
    """Three tools whose arguments are free strings (the real ``open`` takes an enum of its ids)."""
    from unimask.agent.tools import BM25Index, Tool, answer_tool, search_tool

    docs = [{"id": "json.dumps", "title": "json.dumps", "text": "serialize objects"}]
    free_open = Tool("open", "Open a document by id.", {"type": "object", "properties": {
        "doc_id": {"type": "string", "minLength": 1}}, "required": ["doc_id"]}, lambda doc_id: doc_id)
    return [search_tool(BM25Index(docs, tmp_path), lambda d: d["text"]), free_open, answer_tool()]


def test_fast_samplers_reproduce_todays_outputs(any_model, tiny_tokenizer, tmp_path):
    """Against a frozen copy of today's samplers (tests/legacy_sampling.py), with forced tokens off:
    the same text, stop reason and token ids (today's ids run on to the block's end), and never more
    forward passes -- fewer only where today's decoded past the end of the action."""
    from legacy_sampling import LegacyAR, LegacyDiffusion
    from unimask.agent.constraint import ToolCallConstraint
    from unimask.agent.protocol import tool_call_schema

    tok = tiny_tokenizer
    constraint = ToolCallConstraint(tool_call_schema(_tools(tmp_path)), max_think_chars=6)
    bias = torch.zeros(tok.vocab_size)
    for t in range(tok.vocab_size):
        piece = tok.decode([t])
        if piece in ('"', "}", "}}", "</tool_call>", "<tool_call>", "<|end|>"):
            bias[t] = {'"': 9.0, "}}": 8.0, "</tool_call>": 8.0}.get(piece, 5.0)
    prompts = ["<|user|>q<|end|><|assistant|>", "import json\n"]
    fewer = 0
    for model, c in ((any_model, None), (_Biased(any_model, bias).eval(), constraint)):
        arms = [(ARBackbone(model, tok), LegacyAR(model, tok), {})]
        for mode, bl, shift, extra in (("block", 4, False, {}), ("block", 3, True, {}), ("full", 4, False, {"cache": "dual"})):
            arms.append((DiffusionBackbone(model, tok, mode=mode, block_length=bl, shift=shift),
                         LegacyDiffusion(model, tok, mode=mode, block_length=bl, shift=shift), extra))
        for new, old, extra in arms:
            for threshold in ((0.9,) if isinstance(new, ARBackbone) else (0.9, 0.0, None)):
                kw = {"max_new_tokens": 48, "stop": ["<|end|>"], "constraint": c, "threshold": threshold, **extra}
                for a, b in zip(new.generate(prompts, **kw), old.generate(prompts, **kw), strict=True):
                    assert (a.text, a.stop_reason) == (b.text, b.stop_reason), (type(new), c, threshold)
                    assert a.token_ids == b.token_ids[: len(a.token_ids)]
                    assert a.nfe <= b.nfe
                    fewer += a.nfe < b.nfe
    assert fewer  # the padding blocks / final passes after the action are gone


def test_incremental_parser_agrees_with_the_whole_text_check(tmp_path):
    """``feed`` from the start state accepts exactly the prefixes ``valid`` accepts, and completes
    exactly where ``complete`` does, on canonical actions and random edits of them."""
    import random

    from unimask.agent.constraint import ToolCallConstraint
    from unimask.agent.protocol import format_action

    args = {"type": "object", "properties": {"k": {"type": "integer", "minimum": 1, "maximum": 5},
                                             "t": {"type": "number", "minimum": -1.5, "maximum": 2},
                                             "q": {"type": "string"}, "e": {"type": "string", "enum": ["ab", "abc"]},
                                             "b": {"type": "boolean"}, "m": {"type": "string", "maxLength": 2},
                                             "d": {"type": "string", "enum": ["a.b", "a.bc", "a.bd", "sq", "ab"]}},
            "required": ["k"]}
    schema = {"oneOf": [{"properties": {"name": {"const": "f"}, "arguments": args}},
                        {"properties": {"name": {"const": "search"}, "arguments": {
                            "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}},
                        {"properties": {"name": {"const": "sea"}, "arguments": {"type": "object", "properties": {}}}}]}
    c = ToolCallConstraint(schema, max_think_chars=6)
    base = [format_action("f", {"k": 3, "t": -1.25, "q": 'a\\"b', "e": "abc", "b": True}, "hmm"),
            format_action("f", {"k": 1, "m": "\\", "d": "a.bc"}), format_action("f", {"m": "ab", "k": 2, "d": "sq"}),
            format_action("search", {"query": "json dumps"}, "abcdef"), format_action("sea", {}),
            format_action("f", {"t": 3, "k": 0})]
    alphabet = list('{}":, -.0159tfabekqs\\') + ["<tool_call>", "</tool_call>", "<think>", "</think>", "<|end|>"]
    rng = random.Random(0)
    for _ in range(300):
        s = rng.choice(base)
        for _ in range(rng.randint(0, 3)):
            i = rng.randint(0, len(s))
            s = s[:i] + rng.choice(alphabet) + s[i + rng.randint(0, 1):]
        state = c.start()
        for j, ch in enumerate(s + " "):
            p = s[:j]
            assert (state is not None) == c.valid(p), p
            if state is not None:
                assert c.is_complete(state) == c.complete(p), p
            state = c.feed(state, ch)
    forced = {"": "", "<think>ab</think>": '<tool_call>{"name": "', '<tool_call>{"name": "se': "a",
              '<tool_call>{"name": "sear': 'ch", "arguments": {"query": "',
              '<tool_call>{"name": "f", "arguments": {"e": "a': "b",
              '<tool_call>{"name": "search", "arguments": {"query": "a"': "}}</tool_call>",
              '<tool_call>{"name": "f", "arguments": {"m": "ab': '", "',  # maxLength closes the string
              '<tool_call>{"name": "f", "arguments": {"d": "s': 'q", "', '<tool_call>{"name": "f", "arguments": {"d": "a.': "b",
              '<tool_call>{"name": "f", "arguments": {"d": "a.bc': '", "', '<tool_call>{"name": "f", "arguments": {"d": "a.b': "",
              '<tool_call>{"name": "f", "arguments": {"k": 1, "d": "a.bd': '"'}
    for text, rest in forced.items():
        assert c.forced(c.state_of(text)) == rest, text


def test_forced_tokens_cost_no_pass_and_keep_greedy_choices(any_model, tiny_tokenizer, tmp_path):
    """Jump-forward AR: every token is either the constraint's forced continuation or the greedy
    valid choice of an uncached re-forward of the same prefix. Diffusion pre-fill: valid actions,
    fewer passes. Both report how many tokens were forced."""
    from unimask.agent.constraint import ToolCallConstraint
    from unimask.agent.protocol import tool_call_schema

    tok = tiny_tokenizer
    c = ToolCallConstraint(tool_call_schema(_tools(tmp_path)), max_think_chars=6)
    bias = torch.zeros(tok.vocab_size)
    for t in range(tok.vocab_size):
        bias[t] = {'"': 9.0, "}}": 8.0, "</tool_call>": 8.0, "<tool_call>": 5.0}.get(tok.decode([t]), 0.0)
    model = _Biased(any_model, bias).eval()
    prompt = "<|user|>q<|end|><|assistant|>"
    kw = {"max_new_tokens": 48, "stop": ["<|end|>"], "constraint": c}
    ar = ARBackbone(model, tok)
    g = ar.generate([prompt], forced_tokens=True, **kw)[0]
    plain = ar.generate([prompt], **kw)[0]
    assert c.complete(g.text) and g.info["forced_tokens"] > 0 and g.nfe + g.info["forced_tokens"] <= plain.nfe + 1
    ids, st, queue = tok.encode(prompt), c.start(), []
    with torch.no_grad():
        for t in g.token_ids:
            if not queue and not c.is_complete(st):
                queue = c.forced_ids(st, tok)[0]
            if c.is_complete(st):
                assert t == tok.end_of_turn_id
            elif queue:
                assert t == queue.pop(0)
            else:
                assert t == c.best_valid(st, model(torch.tensor([ids]))[0, -1], tok)
            st = st if c.is_complete(st) else c.advance(st, t, tok)
            ids.append(t)
    for shift in (False, True):
        d = DiffusionBackbone(model, tok, mode="block", block_length=4, shift=shift)
        fast = d.generate([prompt], forced_tokens=True, threshold=0.9, **kw)[0]
        slow = d.generate([prompt], threshold=0.9, **kw)[0]
        assert c.valid(fast.text) and fast.info["forced_tokens"] > 0 and fast.nfe < slow.nfe


class _Counting(torch.nn.Module):
    """Records how many tokens each forward pass is fed."""

    def __init__(self, inner: Transformer):
        super().__init__()
        self.inner, self.cfg, self.fed = inner, inner.cfg, []

    def new_kv_cache(self, *a, **k):
        return self.inner.new_kv_cache(*a, **k)

    def forward(self, ids, *a, **k):
        self.fed.append(ids.shape[1])
        return self.inner(ids, *a, **k)


def test_prefix_cache_prefills_only_new_tokens_and_changes_no_output(any_model, tiny_tokenizer):
    """Agent-like rounds (each prompt extends the last one by its action and an observation):
    with ``prefix_cache`` every output is the same as without, and a round's first pass is fed only
    the tokens after the common prefix with what the previous call cached."""
    from unimask.sampling.prefix_cache import common_prefix

    tok = tiny_tokenizer
    model = _Counting(any_model).eval()
    backbones = [lambda: ARBackbone(model, tok)] + [
        (lambda s=shift: DiffusionBackbone(model, tok, mode="block", block_length=4, shift=s)) for shift in (False, True)]
    for make in backbones:
        runs = {}
        for on in (False, True):
            bb, prompt, outs, first_fed, expected = make(), "<|user|>find x<|end|><|assistant|>", [], [], []
            for r in range(4):
                ids = tok.encode_prompt(prompt)
                block = 0 if isinstance(bb, ARBackbone) else 4  # a diffusion pass also feeds the first block
                expected.append(block + len(ids) - (common_prefix(bb.prefix.ids[: len(ids) - 1], ids) if on else 0))
                model.fed.clear()
                g = bb.generate([prompt], max_new_tokens=12, prefix_cache=on, temperature=1.0, seed=r)[0]
                first_fed.append(model.fed[0])
                outs.append((g.text, g.token_ids, g.nfe))
                prompt += g.text + f"<|end|><|tool|>result {r}<|end|><|assistant|>"
            runs[on] = outs
            if on:
                assert first_fed == expected
                assert sum(first_fed[1:]) < sum(len(tok.encode_prompt(p)) for p in [prompt]) - 10  # reuse happened
        assert runs[True] == runs[False], type(make())
        assert len({o[0] for o in runs[True]}) > 1  # sampled, so the outputs depend on the logits

"""``unimask convert``: import every supported family from a tiny random directory built here, fp32
logit parity both ways, greedy generation against ``transformers.generate``, the LLaDA/Dream weight
name maps, special tokens and clear refusals of what unimask cannot express."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hf_tiny import (
    EOS,
    MASK,
    TOKENIZER_SIZE,
    VOCAB,
    build_diffusion,
    build_native,
    build_tokenizer,
    diffusion_config,
    diffusion_state,
)
from unimask.model import AttentionStructure, ModelConfig, Transformer, load_checkpoint, save_checkpoint
from unimask.model.convert import (
    ConvertError,
    ensure_checkpoint,
    export_checkpoint,
    import_hf_dir,
    model_config_from_hf,
    read_hf_weights,
    state_from_hf,
)
from unimask.tokenizer import special as sp
from unimask.tokenizer.chat import Turn, render_text, render_turns

NATIVE = ["llama", "mistral", "qwen2", "qwen3"]
TOL = 1e-4


def _ids(n: int = 2, t: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TOKENIZER_SIZE, (n, t), generator=torch.Generator().manual_seed(seed))


def _kept_columns(extra: dict, vocab: int) -> list[int]:
    """Logit columns parity is checked on: all but the rows of tokens the import added."""
    added = {extra["special_tokens"][t] for t in extra["added_tokens"]}
    return [i for i in range(vocab) if i not in added]


@pytest.mark.parametrize("arch", NATIVE)
def test_native_roundtrip_parity_and_greedy_generation(arch: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from unimask.sampling import load_backbone

    src = build_native(arch, tmp_path / "hf")
    dst = import_hf_dir(src, tmp_path / "ckpt")
    model, tok, extra = load_checkpoint(dst)
    assert extra["backbone"] == "ar" and extra["source"]["arch"] == arch
    assert tok.eos_id == tok.token_to_id(EOS[arch])  # the model's own EOS plays unimask's
    assert model.cfg.vocab_size >= tok.vocab_size > TOKENIZER_SIZE
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    ids = _ids()
    cols = _kept_columns(extra, VOCAB)
    with torch.no_grad():
        ref = hf(ids).logits
        ours = model(ids)
        err_in = (ours[..., cols] - ref[..., cols]).abs().max().item()
        assert err_in <= TOL, f"{arch} import: max |dlogit| {err_in:.2e}"
        out = export_checkpoint(dst, tmp_path / "hf_out")
        back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert back.config.model_type == arch
        err_out = (back(ids).logits - ours).abs().max().item()
        assert err_out <= TOL, f"{arch} export: max |dlogit| {err_out:.2e}"
    prompt = ids[:1, :6]
    want = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                       eos_token_id=None, pad_token_id=0)[0, 6:].tolist()
    got = load_backbone(dst, device="cpu").generate([""], prompt_ids=[prompt[0].tolist()], max_new_tokens=10,
                                                    stop_token_ids=[])[0].token_ids
    assert got == want
    again = back.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                          eos_token_id=None, pad_token_id=0)[0, 6:].tolist()
    assert again == want  # the exported directory decodes as the original did


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_a_tokenizer_that_adds_bos_keeps_it_through_import_export_and_generation(arch: str, tmp_path: Path) -> None:
    """Llama/Mistral tokenizers put ``<s>`` before every text. transformers 5 takes that from
    tokenizer.json's post-processor (tokenizer_config's add_bos_token is ignored beside a
    tokenizer.json), and so does unimask: a text prompt starts with the BOS, greedy decoding of a
    text prompt matches transformers' tokenizer(prompt) + generate(), and the export keeps it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unimask.sampling import load_backbone

    src = build_native(arch, tmp_path / "hf", bos=True)
    prompt = "import os\ndef f(x):"
    ref_ids = AutoTokenizer.from_pretrained(src)(prompt).input_ids
    bos = ref_ids[0]
    assert bos == json.loads((src / "config.json").read_text())["bos_token_id"]
    dst = import_hf_dir(src, tmp_path / "ckpt")
    _, tok, _ = load_checkpoint(dst)
    assert tok.bos_id == bos and tok.encode_prompt(prompt) == ref_ids and tok.encode(prompt) == ref_ids[1:]
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    ids = torch.tensor([ref_ids])
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                       eos_token_id=None, pad_token_id=0)[0, len(ref_ids):].tolist()
    got = load_backbone(dst, device="cpu").generate([prompt], max_new_tokens=8, stop_token_ids=[])[0].token_ids
    assert got == want
    out = export_checkpoint(dst, tmp_path / "hf_out")
    assert AutoTokenizer.from_pretrained(out)(prompt).input_ids == ref_ids
    assert json.loads((out / "config.json").read_text())["bos_token_id"] == bos
    _, tok2, _ = load_checkpoint(import_hf_dir(out, tmp_path / "ckpt2"))
    assert tok2.encode_prompt(prompt) == ref_ids
    # agent SFT is rendered as the agent's prompts are: the BOS first, then the same ids
    turns = [Turn("user", "Which module defines `AST`?"), Turn("assistant", "<think>x</think>")]
    rendered = render_turns(turns, tok).token_ids
    assert rendered[0] == bos and rendered == tok.encode_prompt(render_text(turns))


def test_tokenizers_without_bos_prompt_as_before(tmp_path: Path, tiny_tokenizer) -> None:
    """Qwen's tokenizer and unimask's own add nothing: a prompt is its plain encoding, no BOS exported."""
    _, tok, _ = load_checkpoint(import_hf_dir(build_native("qwen2", tmp_path / "hf"), tmp_path / "ckpt"))
    for t in (tok, tiny_tokenizer):
        assert t.bos_id is None and t.encode_prompt("def f(x):") == t.encode("def f(x):")
        turns = [Turn("user", "Which module defines `AST`?")]
        assert render_turns(turns, t).token_ids == t.encode(render_text(turns))
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "out")
    assert json.loads((out / "config.json").read_text()).get("bos_token_id") is None


def test_special_tokens_added_with_mean_rows_and_recorded(tmp_path: Path) -> None:
    src = build_native("qwen2", tmp_path / "hf")
    model, tok, extra = load_checkpoint(import_hf_dir(src, tmp_path / "ckpt"))
    assert set(extra["added_tokens"]) == set(sp.SPECIAL_TOKENS) - {sp.EOS}  # Qwen already has <|endoftext|>
    assert extra["special_tokens"][sp.MASK] == tok.mask_id and tok.mask_id >= TOKENIZER_SIZE
    w = model.embed.weight.detach()
    mean = w[:TOKENIZER_SIZE].mean(0)
    new = [tok.token_to_id(t) for t in extra["added_tokens"]]
    assert torch.allclose(w[new], mean.expand(len(new), -1))
    assert torch.allclose(model.lm_head.weight.detach()[new], model.lm_head.weight.detach()[:TOKENIZER_SIZE].mean(0))
    assert tok.encode(sp.TOOL_CALL_START) == [tok.tool_call_start_id]  # one token, not its characters


@pytest.mark.parametrize("arch", ["dream", "llada"])
def test_diffusion_families_name_map_and_mask_token(arch: str, tmp_path: Path) -> None:
    """The weight-name map on a synthetic LLaDA/Dream state dict: every tensor lands where it should."""
    src = build_diffusion(arch, tmp_path / arch)
    model, tok, extra = load_checkpoint(import_hf_dir(src, tmp_path / "ckpt"))
    assert extra["backbone"] == "masked_diffusion" and extra["shift"] is (arch == "dream")
    assert tok.mask_id == tok.token_to_id(MASK[arch]) < TOKENIZER_SIZE  # the model's own mask token
    assert sp.MASK not in extra["added_tokens"]
    state = diffusion_state(arch)
    ours = model.state_dict()
    pairs = {"llada": [("embed.weight", "model.transformer.wte.weight"),
                       ("layers.1.attn.o_proj.weight", "model.transformer.blocks.1.attn_out.weight"),
                       ("layers.0.mlp.gate_proj.weight", "model.transformer.blocks.0.ff_proj.weight"),
                       ("layers.0.mlp.down_proj.weight", "model.transformer.blocks.0.ff_out.weight"),
                       ("layers.1.mlp_norm.weight", "model.transformer.blocks.1.ff_norm.weight"),
                       ("lm_head.weight", "model.transformer.ff_out.weight")],
             "dream": [("layers.0.attn.q_proj.bias", "model.layers.0.self_attn.q_proj.bias"),
                       ("layers.1.attn.v_proj.weight", "model.layers.1.self_attn.v_proj.weight"),
                       ("norm.weight", "model.norm.weight"), ("lm_head.weight", "lm_head.weight")]}[arch]
    for u, h in pairs:
        n = min(TOKENIZER_SIZE, state[h].shape[0])  # rows past the tokenizer are new tokens
        torch.testing.assert_close(ours[u][:n], state[h][:n], atol=0, rtol=0)
    assert model.cfg.attn_bias is (arch == "dream")


@pytest.mark.parametrize("arch", ["dream", "llada"])
def test_diffusion_export_round_trip_is_bit_identical(arch: str, tmp_path: Path) -> None:
    """An imported Dream/LLaDA checkpoint exports to its own layout (config keys, weight names,
    tokenizer files) and imports again to the same weights, config, tokens and logits, bit for bit."""
    from transformers import AutoTokenizer

    from unimask.cli import _mount, app

    src = build_diffusion(arch, tmp_path / arch)
    first = import_hf_dir(src, tmp_path / "ckpt")
    _mount()
    r = CliRunner().invoke(app, ["convert", str(first), str(tmp_path / "out"), "--arch", arch])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    conf = json.loads((out / "config.json").read_text())
    built = diffusion_config(arch, build_tokenizer(arch))
    shape_keys = set(built) - {"vocab_size", "embedding_size", "pad_token_id", "bos_token_id", "mlp_ratio",
                                "init_device", "flash_attention"}
    assert {k: conf[k] for k in shape_keys} == {k: built[k] for k in shape_keys}  # their code reads these
    orig, back = read_hf_weights(src), read_hf_weights(out)
    assert set(back) == set(orig)
    for name, w in orig.items():  # rows past the tokenizer became unimask's special tokens
        torch.testing.assert_close(back[name][:TOKENIZER_SIZE], w[:TOKENIZER_SIZE], atol=0, rtol=0)
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok.mask_token == MASK[arch] and hf_tok.mask_token_id == conf["mask_token_id"]
    m1, t1, e1 = load_checkpoint(first)
    m2, t2, e2 = load_checkpoint(import_hf_dir(out, tmp_path / "again"))
    assert m2.cfg == m1.cfg and t2.special_token_ids == t1.special_token_ids and t2.vocab_size == t1.vocab_size
    assert (e2["backbone"], e2["shift"], e2["added_tokens"]) == (e1["backbone"], e1["shift"], [])
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert set(s1) == set(s2) and all(torch.equal(s1[k], s2[k]) for k in s1)
    ids = _ids(t=12)
    with torch.no_grad():
        structure = AttentionStructure.bidirectional(*ids.shape)
        assert torch.equal(m1(ids, structure), m2(ids, structure))


@pytest.mark.parametrize("shift", [False, True], ids=["llada", "dream"])
def test_block_diffusion_checkpoint_exports_and_keeps_its_decoder(shift: bool, tmp_path: Path, tiny_tokenizer) -> None:
    """A block-diffusion model trained here (tied, no q/k/v biases) exports to LLaDA's layout, or
    Dream's when shifted; the block decoder rides in config.json and comes back on import."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tiny_tokenizer.vocab_size, d_model=64, n_layers=2, n_heads=4,
                                    n_kv_heads=2, max_seq_len=64))
    extra = {"backbone": "block_diffusion", "block_size": 4, "clean_attention": "causal", **({"shift": True} if shift
                                                                                             else {})}
    ckpt = save_checkpoint(tmp_path / "ckpt", model, tiny_tokenizer, extra)
    out = export_checkpoint(ckpt, tmp_path / "out")
    conf = json.loads((out / "config.json").read_text())
    assert conf["model_type"] == ("Dream" if shift else "llada")
    back, tok, extra2 = load_checkpoint(import_hf_dir(out, tmp_path / "again"))
    assert {k: extra2[k] for k in ("backbone", "block_size", "clean_attention", "shift")} == \
        {"backbone": "block_diffusion", "block_size": 4, "clean_attention": "causal", "shift": shift}
    assert tok.special_token_ids == tiny_tokenizer.special_token_ids and extra2["added_tokens"] == []
    ids = torch.randint(0, tiny_tokenizer.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    structure = AttentionStructure.bidirectional(*ids.shape)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, structure), model(ids, structure), atol=TOL, rtol=0)
    if not shift:  # LLaDA holds exactly these weights; Dream's layout adds zero q/k/v biases
        s1, s2 = model.state_dict(), back.state_dict()
        assert back.cfg == model.cfg and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_diffusion_logits_match_reference_fixture(tmp_path: Path) -> None:
    """Our logits on the synthetic LLaDA/Dream weights against numbers recorded once with each family's
    public modeling code, run outside this repo on the same weights (their code is not part of the
    project; ``tests/fixtures/diffusion_xcheck.json`` names the copies used and holds numbers only).
    Both agreed to 0.0 in fp32 when recorded; bidirectional attention, as both families use."""
    data = json.loads((Path(__file__).parent / "fixtures" / "diffusion_xcheck.json").read_text())
    assert set(data["families"]) == {"llada", "dream"}
    for arch, rec in data["families"].items():
        src = build_diffusion(arch, tmp_path / arch, seed=rec["seed"])
        model, _, _ = load_checkpoint(import_hf_dir(src, tmp_path / f"ckpt_{arch}"))
        from unimask.model import AttentionStructure

        ids = torch.tensor(rec["input_ids"])
        with torch.no_grad():
            logits = model(ids, AttentionStructure.bidirectional(*ids.shape))
        got = logits[0, :, : len(rec["logits"][0][0])]
        torch.testing.assert_close(got, torch.tensor(rec["logits"][0]), atol=TOL, rtol=0)


# ---------------------------------------------------------------- refusals
def _native_conf(arch: str, **over) -> dict:
    from hf_tiny import hf_config

    return {**hf_config(arch).to_dict(), **over}


@pytest.mark.parametrize(("arch", "over", "match"), [
    ("mistral", {"sliding_window": 16}, "sliding-window"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 16}, "sliding-window"),
    ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "RoPE type 'yarn'"),
    ("llama", {"attention_bias": True}, "o_proj"),
    ("llama", {"hidden_act": "gelu"}, "activation"),
])
def test_unmappable_features_are_named(arch: str, over: dict, match: str) -> None:
    with pytest.raises(ConvertError, match=match):
        model_config_from_hf(_native_conf(arch, **over), arch)


def test_unknown_and_moe_architectures_are_named(tmp_path: Path) -> None:
    from unimask.model.convert import detect_arch

    with pytest.raises(ConvertError, match="mixture-of-experts"):
        detect_arch({"model_type": "qwen2_moe", "num_experts": 8})
    with pytest.raises(ConvertError, match="'gpt2'.*supported: llama"):
        detect_arch({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(ConvertError, match="llada.*YaRN"):
        from unimask.model.convert import _llada_config

        _llada_config({"yarn": True})


def test_unmapped_weights_and_vocab_mismatch_are_refused(tmp_path: Path) -> None:
    src = build_native("llama", tmp_path / "hf")
    conf = json.loads((src / "config.json").read_text())
    cfg = model_config_from_hf(conf, "llama")
    from unimask.model.convert import read_hf_weights

    state = read_hf_weights(src)
    state["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(64)
    with pytest.raises(ConvertError, match="unmapped.*o_proj.bias"):
        state_from_hf(state, cfg, "llama")
    conf["vocab_size"] = 256  # fewer rows than the tokenizer's 300 tokens
    (src / "config.json").write_text(json.dumps(conf))
    from safetensors.torch import save_file

    small = {k: (v[:256] if v.shape[0] == VOCAB else v) for k, v in read_hf_weights(src).items()}
    save_file(small, str(src / "model.safetensors"))
    with pytest.raises(ConvertError, match="tokenizer has 300 tokens but the model's embedding has 256"):
        import_hf_dir(src, tmp_path / "ckpt")


def test_export_refuses_what_the_family_lacks(tmp_path: Path) -> None:
    src = build_native("qwen3", tmp_path / "hf")
    dst = import_hf_dir(src, tmp_path / "ckpt")
    with pytest.raises(ConvertError, match="qk_norm.*export to qwen3"):
        export_checkpoint(dst, tmp_path / "out", arch="llama")
    with pytest.raises(ConvertError, match="AR \\(causal\\) checkpoint.*dream is a diffusion layout.*--arch llama"):
        export_checkpoint(dst, tmp_path / "out", arch="dream")


@pytest.mark.parametrize(("arch", "to", "match"), [
    ("dream", "qwen2", "shifted masked_diffusion .*qwen2 is a causal family.*--arch dream"),
    ("llada", "llama", "masked_diffusion .*llama is a causal family.*--arch llada"),
    ("dream", "llada", "shifted.*Dream's convention.*--arch dream"),
    ("llada", "dream", "unshifted.*LLaDA's convention.*--arch llada"),
])
def test_diffusion_export_refuses_a_family_that_would_run_it_differently(arch: str, to: str, match: str,
                                                                        tmp_path: Path) -> None:
    ckpt = import_hf_dir(build_diffusion(arch, tmp_path / arch), tmp_path / "ckpt")
    with pytest.raises(ConvertError, match=match):
        export_checkpoint(ckpt, tmp_path / "out", arch=to)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- CLI and direct starts
def test_convert_cli_both_ways_and_cached_direct_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unimask.cli import _mount, app

    monkeypatch.setenv("UNIMASK_CACHE", str(tmp_path / "cache"))
    _mount()
    src = build_native("llama", tmp_path / "hf")
    runner = CliRunner()
    r = runner.invoke(app, ["convert", str(src), str(tmp_path / "ckpt")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "ckpt"), str(tmp_path / "back"), "--arch", "mistral"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "mistral"
    r = runner.invoke(app, ["convert", str(tmp_path / "nowhere"), str(tmp_path / "x")])
    assert r.exit_code == 2 and "no config.json" in r.output
    first = ensure_checkpoint(src)
    assert first.parent == tmp_path / "cache" / "converted" and ensure_checkpoint(src) == first
    assert ensure_checkpoint(first) == first


def test_dream_with_only_vocab_and_merges_uses_its_mask_token(tmp_path: Path) -> None:
    """Dream's hub repository ships vocab.json + merges.txt (its tokenizer class is remote code)."""
    src = build_diffusion("dream", tmp_path / "dream")
    tok = json.loads((src / "tokenizer.json").read_text())
    added = {str(t["id"]): {k: t[k] for k in ("content", "special", "lstrip", "rstrip", "normalized", "single_word")}
             for t in tok["added_tokens"]}
    (src / "vocab.json").write_text(json.dumps(tok["model"]["vocab"]))
    merges = [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]
    (src / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    conf = json.loads((src / "tokenizer_config.json").read_text())
    (src / "tokenizer_config.json").write_text(json.dumps({**conf, "added_tokens_decoder": added,
                                                           "tokenizer_class": "DreamTokenizer"}))
    (src / "tokenizer.json").unlink()
    _, tok2, extra = load_checkpoint(import_hf_dir(src, tmp_path / "ckpt"))
    mask = next(int(i) for i, t in added.items() if t["content"] == "<|mask|>")
    assert tok2.mask_id == mask and sp.MASK not in extra["added_tokens"]
    assert extra["shift"] is True


def test_a_pad_that_is_eos_gets_its_own_token(tmp_path: Path) -> None:
    """LLaDA and Dream set pad_token_id = eos_token_id; padding must not read as a stop."""
    _, tok, extra = load_checkpoint(import_hf_dir(build_diffusion("llada", tmp_path / "l"), tmp_path / "c"))
    assert tok.pad_id != tok.eos_id and sp.PAD in extra["added_tokens"]
    assert extra["aliased_tokens"] == {sp.MASK: "<|mdm_mask|>"}


def test_generate_takes_hf_directories_directly(tmp_path: Path) -> None:
    """``unimask generate DIR``: a Dream directory decodes as a shifted diffusion model, a Llama one as AR."""
    from unimask.cli import _mount, app
    from unimask.sampling import DiffusionBackbone, load_backbone

    dream = load_backbone(build_diffusion("dream", tmp_path / "dream"), device="cpu")
    assert isinstance(dream, DiffusionBackbone) and dream.shift
    gen = dream.generate(["def f(x):"], max_new_tokens=4, threshold=0.0)[0]  # commit all: a random model is never sure
    assert gen.token_ids and gen.nfe < len(gen.token_ids)
    _mount()
    r = CliRunner().invoke(app, ["generate", str(build_native("llama", tmp_path / "llama")), "-p", "import os",
                                 "--max-new-tokens", "4", "--device", "cpu"])
    assert r.exit_code == 0 and "ar · NFE" in r.output, r.output


def test_training_a_dream_model_unshifted_is_refused(tmp_path: Path) -> None:
    from unimask.config import ConfigError, from_dict
    from unimask.train import TrainConfig
    from unimask.train.trainer import Trainer

    dream = build_diffusion("dream", tmp_path / "dream")
    cfg = from_dict(TrainConfig, {"init_from": str(dream), "objectives": [{"name": "masked_diffusion"}],
                                  "out_dir": str(tmp_path / "run"), "device": "cpu", "tensorboard": False})
    with pytest.raises(ConfigError, match="shifted.*set shift: true"):
        Trainer(cfg)

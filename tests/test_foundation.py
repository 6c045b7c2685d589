"""Foundation: configs, tokenizer, data pipeline and the CLIs that drive them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from unimask.config import ConfigError, load_config, parse_overrides
from unimask.tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerError


@dataclass
class Inner:
    n_layers: int = 2
    ratio: tuple[float, float] = (0.1, 0.2)
    flag: bool = False


@dataclass
class Outer:
    name: str = "x"
    model: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=lambda: {"max_seq_len": 1024})


def test_config_files_overrides_and_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("name: y\nmodel: {n_layers: 3}\n")
    (tmp_path / "c.toml").write_text('name = "z"\n[model]\nflag = true\n')
    cfg = load_config(Outer, tmp_path / "c.yaml", ["--model.n_layers", "4", "--model.ratio=[0.3, 0.4]",
                                                  "--tags", "a,b", "--model.flag", "yes"])
    assert cfg == Outer("y", Inner(4, (0.3, 0.4), True), ["a", "b"])
    # a dotted override sets one key of a mapping field and keeps the default's other keys
    assert load_config(Outer, None, ["--extra.smear", "true"]).extra == {"max_seq_len": 1024, "smear": "true"}
    from unimask.presets import model_preset

    assert model_preset("tiny", smear="true", max_seq_len="64").smear is True  # CLI strings get typed
    assert load_config(Outer, tmp_path / "c.toml").model.flag is True
    with pytest.raises(ConfigError, match=r"unknown config key 'model.n_layer'.*valid keys: flag, n_layers, ratio"):
        load_config(Outer, None, {"model.n_layer": "2"})
    with pytest.raises(ConfigError, match="expected int"):
        load_config(Outer, None, {"model.n_layers": "two"})
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--model.n_layers"])


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200))
def test_tokenizer_roundtrips_any_unicode(tiny_tokenizer, text):
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text)) == text


def test_special_tokens_are_single_ids(tiny_tokenizer):
    for t in SPECIAL_TOKENS:
        assert tiny_tokenizer.encode(f"a{t}b").count(tiny_tokenizer.token_to_id(t)) == 1
        assert len(tiny_tokenizer.encode(t)) == 1


def test_tokenizer_loading_and_errors(tiny_tokenizer, tmp_path):
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer.hf).save_pretrained(tmp_path / "hf")
    assert Tokenizer.load(tmp_path / "hf").encode("def f()") == tiny_tokenizer.encode("def f()")
    bare = HF(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=bare).save_pretrained(tmp_path / "third")
    adopted = Tokenizer.load(tmp_path / "third")  # a third-party dir gains our special tokens
    assert adopted.mask_id is not None and adopted.vocab_size == 2 + len(SPECIAL_TOKENS)
    with pytest.raises(TokenizerError, match="no tokenizer"):
        Tokenizer.load(tmp_path / "nothing")
    (tmp_path / "bad.json").write_text("{garbled")
    with pytest.raises(TokenizerError, match="cannot read"):
        Tokenizer.load(tmp_path / "bad.json")
    with pytest.raises(TokenizerError, match="vocab_size"):
        tiny_tokenizer.check_vocab(10)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for i in range(12):
        (root / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * (3 + i))
    (root / "dup.py").write_text((root / "m3.py").read_text())
    (root / "latin1.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    with open(root / "docs.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"text": f"Document number {i} explains function f{i}. " * 5}) + "\n")
    return root


def _prepare(corpus: Path, out: Path, **extra) -> Path:
    from unimask.config import from_dict
    from unimask.data import DataConfig, prepare_data

    cfg = from_dict(DataConfig, {
        "sources": [{"name": "code", "kind": "glob", "path": str(corpus), "pattern": "*.py"},
                    {"name": "text", "kind": "jsonl", "path": str(corpus / "docs.jsonl"), "text_field": "text"}],
        "tokenizer": {"vocab_size": 400}, "out_dir": str(out), "val_fraction": 0.2, "workers": 0, **extra})
    return prepare_data(cfg, progress=False)


def test_prepare_dedup_split_and_resumable_loader(corpus, tmp_path):
    from unimask.data import DataStats, PackedLoader

    out = _prepare(corpus, tmp_path / "d")
    meta = json.loads((out / "meta.json").read_text())
    text = json.dumps(meta)
    assert "non_utf8" in text and '"non_utf8_skipped": 1' in text  # the latin-1 file is skipped and counted
    stats = DataStats.from_dir(out, verify=True)
    assert stats.splits["train"].docs + stats.splits.get("val", stats.splits["train"]).docs >= 1
    again = _prepare(corpus, tmp_path / "d2")  # deterministic, content-hashed split
    assert json.loads((again / "meta.json").read_text())["splits"] == meta["splits"]
    # the packing loader resumes exactly: no repeated or skipped token
    full = PackedLoader(out, "train", 16, seed=1, epochs=1)
    ref = [w.tokens.tolist() for w in full]
    first = PackedLoader(out, "train", 16, seed=1, epochs=1)
    it = iter(first)
    got = [next(it).tokens.tolist() for _ in range(3)]
    state = first.state_dict()
    resumed = PackedLoader(out, "train", 16, seed=1, epochs=1)
    resumed.load_state_dict(state)
    got += [w.tokens.tolist() for w in resumed]
    assert got == ref
    # two ranks split the data disjointly
    r0 = [w.tokens.tolist() for w in PackedLoader(out, "train", 16, rank=0, world_size=2, seed=1, epochs=1)]
    r1 = [w.tokens.tolist() for w in PackedLoader(out, "train", 16, rank=1, world_size=2, seed=1, epochs=1)]
    assert r0 and r1 and len(r0) + len(r1) <= len(ref) + 2


def test_bad_input_is_a_clear_error(corpus, tmp_path):
    from unimask.data import DataError, PackedLoader

    with pytest.raises((DataError, ConfigError, ValueError), match="empty|no documents|not found|does not exist"):
        _prepare(tmp_path / "nowhere", tmp_path / "x")
    out = _prepare(corpus, tmp_path / "d")
    shard = sorted((out / "train").glob("*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(Exception, match="(?i)truncat|size|corrupt|checksum"):
        list(PackedLoader(out, "train", 16, epochs=1))


def test_cli_commands(corpus, tmp_path, tiny_tokenizer):
    from unimask.cli import _mount, app
    from unimask.model import Transformer, save_checkpoint
    from unimask.presets import model_preset

    _mount()
    runner = CliRunner()
    cfg = tmp_path / "data.yaml"
    cfg.write_text(f"sources: [{{name: code, kind: glob, path: {corpus}, pattern: '*.py'}}]\n"
                   f"tokenizer: {{vocab_size: 300}}\nworkers: 0\nout_dir: {tmp_path / 'dd'}\n")
    r = runner.invoke(app, ["tokenizer", "train", str(cfg), "--out", str(tmp_path / "tok.json")])
    assert r.exit_code == 0, r.output
    assert Tokenizer.load(tmp_path / "tok.json").vocab_size <= 300
    r = runner.invoke(app, ["data", "prepare", str(cfg), "--tokenizer.vocab_size", "320"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "stats", str(tmp_path / "dd")])
    assert r.exit_code == 0 and "train" in r.output
    r = runner.invoke(app, ["data", "prepare", str(cfg), "--tokenizer.vocab_sise", "320"])
    assert r.exit_code == 2 and "vocab_sise" in r.output and "vocab_size" in r.output
    for name in ("codegen2_infill", "agent_sft_diffusion"):
        r = runner.invoke(app, ["data", "preview", "--objective", name])
        assert r.exit_code == 0 and "scored" in r.output, r.output
    r = runner.invoke(app, ["data", "preview", "--objective", "copy", "--seq-len", "64", "--param", "marked=1",
                            "--param", "repeats=1", "--param", "max_span=8"])
    assert r.exit_code == 0 and "`" in r.output and ' "' in r.output, r.output  # the quoted source and repeat
    r = runner.invoke(app, ["data", "preview", "--objective", "copy", "--param", "marked"])
    assert r.exit_code != 0 and "KEY=VALUE" in r.output
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", Transformer(model_preset("tiny")), tiny_tokenizer, {"backbone": "ar"})
    r = runner.invoke(app, ["generate", str(ckpt), "--prompt", "def f(", "--max-new-tokens", "5"])
    assert r.exit_code == 0 and "NFE 5" in r.output, r.output
    r = runner.invoke(app, ["infill", str(ckpt), "--prefix", "def f(", "--suffix", "):", "--max-new-tokens", "4"])
    assert r.exit_code == 0, r.output
    dl = save_checkpoint(tmp_path / "dl", Transformer(model_preset("tiny")), tiny_tokenizer,
                         {"backbone": "block_diffusion", "block_size": 4})
    r = runner.invoke(app, ["generate", str(dl), "--prompt", "x =", "--max-new-tokens", "8", "--threshold", "0.0"])
    assert r.exit_code == 0 and "NFE 2" in r.output, r.output

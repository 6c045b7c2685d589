"""``unimask convert``: a Hugging Face model directory <-> a unimask checkpoint.

Owns the architecture table: which Hugging Face families map onto ``ModelConfig`` and how their
weight names map onto ours, for both directions, plus the checks that refuse what the one
unimask block cannot express (sliding-window attention, MoE, other RoPE types, ...) by name.

Inbound: Llama (SmolLM, TinyLlama), Mistral, Qwen2/Qwen2.5, Qwen3 -- transformers-native --
and the two public diffusion families, LLaDA (its own weight names, bidirectional) and Dream
(Qwen2 layout, bidirectional, the logits at position i predict token i+1: recorded as
``extra["shift"] = True``). Their configs are read as plain JSON, so their remote code is never
run. Weights are read straight from ``*.safetensors`` (or ``pytorch_model*.bin``).

An import adopts the model's tokenizer, adds unimask's special tokens it lacks, grows the
embedding (and an untied head) with rows set to the mean of the existing ones, reuses a mask,
EOS or pad token the model already has, and records the mapping in the checkpoint.

Outbound: an AR checkpoint to llama, mistral, qwen2 or qwen3 (directories ``transformers`` loads
natively); a diffusion checkpoint to Dream's layout (shifted) or LLaDA's (unshifted): their config
keys, weight names and tokenizer files, for their own modeling code, which is not included. A
causal family asked for a diffusion model, or the reverse, is refused by name.

``ensure_checkpoint`` is the one entry point other stages use: a unimask checkpoint passes
through, a Hugging Face directory is converted once into a cache and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer as HFTokenizer

from unimask.io import atomic_dir
from unimask.model.checkpoint import CONFIG, load_checkpoint, save_checkpoint
from unimask.model.config import ModelConfig
from unimask.model.transformer import Transformer
from unimask.tokenizer import Tokenizer
from unimask.tokenizer import special as sp
from unimask.tokenizer.tokenizer import TOKENIZER_FILE

CONVERT_VERSION = 1  # bump when an import would write a different checkpoint (invalidates the cache)
IMPORTABLE = ("llama", "mistral", "qwen2", "qwen3", "llada", "dream")
CAUSAL_EXPORTS = ("llama", "mistral", "qwen2", "qwen3")
DIFFUSION_EXPORTS = ("dream", "llada")
EXPORTABLE = CAUSAL_EXPORTS + DIFFUSION_EXPORTS
# config.json key of a Dream/LLaDA export that keeps a decoder their layouts have no field for
# (block diffusion's block size and clean attention); their own code ignores it
DECODER_KEY = "unimask_decoder"
# the remote-code entry points of the public releases (their code files are not written here)
_AUTO_MAP = {"dream": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
             "llada": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                       "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"}}
_MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3",
                "llada": "llada", "dream": "dream"}
_MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")


class ConvertError(ValueError):
    """A directory cannot be converted faithfully; the message names the architecture or feature."""


# ---------------------------------------------------------------------------------------- configs
def read_hf_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / CONFIG
    if not file.is_file():
        raise ConvertError(f"{path} is not a Hugging Face model directory (no {CONFIG})")
    conf = json.loads(file.read_text())
    if "model" in conf and "extra" in conf:
        raise ConvertError(f"{path} is already a unimask checkpoint; convert exports those with --to hf")
    return conf


def detect_arch(conf: dict[str, Any]) -> str:
    """The unimask name of a Hugging Face config's family, or a ConvertError naming what it is."""
    model_type = str(conf.get("model_type", "")).lower()
    if any(conf.get(k) for k in _MOE_KEYS) or "moe" in model_type or model_type == "mixtral":
        raise ConvertError(f"{model_type or 'this model'} is a mixture-of-experts (MoE) model; unimask's block "
                           "has one dense MLP, so it cannot be imported")
    if model_type not in _MODEL_TYPES:
        raise ConvertError(f"architecture {model_type!r} ({', '.join(conf.get('architectures') or [])}) cannot be "
                           f"imported; supported: {', '.join(IMPORTABLE)}. Run it for inference with HFCausalLM")
    return _MODEL_TYPES[model_type]


def _rope_scaling(conf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """``(rope_theta, rope_scaling)`` from a config that has ``rope_parameters`` (transformers 5),
    ``rope_scaling`` (older) or neither."""
    params = dict(conf.get("rope_parameters") or conf.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", conf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, {"rope_type": "linear", "factor": float(params["factor"])}
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        return theta, {"rope_type": "llama3", **{k: float(params[k]) for k in keys}}
    raise ConvertError(f"RoPE type {kind!r} is not supported (unimask implements default, linear and llama3); "
                       "importing it would give a silently different model")


def _check_full_attention(arch: str, conf: dict[str, Any]) -> None:
    layer_types = conf.get("layer_types") or []
    sliding = [t for t in layer_types if t != "full_attention"]
    window = conf.get("sliding_window")
    uses_window = conf.get("use_sliding_window", arch == "mistral") and window is not None
    if sliding or (uses_window and int(window) < int(conf.get("max_position_embeddings", 0))):
        raise ConvertError(
            f"{arch} checkpoint uses sliding-window attention (sliding_window={window}, layer types "
            f"{sorted(set(layer_types)) or 'n/a'}); unimask attends over the full context. If you only run "
            f"sequences of at most {window} tokens, set sliding_window to null in its config.json and convert again"
        )


def _require(arch: str, conf: dict[str, Any], key: str, expected: Any, feature: str) -> None:
    value = conf.get(key, expected)
    if value != expected:
        raise ConvertError(f"{arch} checkpoint has {key}={value!r} ({feature}), which unimask cannot express")


def model_config_from_hf(conf: dict[str, Any], arch: str) -> ModelConfig:
    """The ``ModelConfig`` of a Hugging Face config of family ``arch`` (checked for unmappable features)."""
    if arch == "llada":
        return _llada_config(conf)
    _check_full_attention(arch, conf)
    _require(arch, conf, "hidden_act", "silu", "MLP activation")
    _require(arch, conf, "mlp_bias", False, "MLP biases")
    bias = {"qwen2": True, "dream": True}.get(arch, False)
    if arch in ("llama", "mistral", "qwen3"):
        _require(arch, conf, "attention_bias", False, "biases on every attention projection, o_proj included")
    theta, scaling = _rope_scaling(conf)
    heads = int(conf["num_attention_heads"])
    head_dim = conf.get("head_dim")
    head_dim = None if head_dim in (None, int(conf["hidden_size"]) // heads) else int(head_dim)
    return ModelConfig(
        vocab_size=int(conf["vocab_size"]),
        d_model=int(conf["hidden_size"]),
        n_layers=int(conf["num_hidden_layers"]),
        n_heads=heads,
        n_kv_heads=int(conf.get("num_key_value_heads") or heads),
        d_ff=int(conf["intermediate_size"]),
        max_seq_len=int(conf.get("max_position_embeddings", 2048)),
        rope_theta=theta,
        norm_eps=float(conf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(conf.get("tie_word_embeddings", False)),
        attn_bias=bias,
        qk_norm=arch == "qwen3",
        attn_head_dim=head_dim,
        rope_scaling=scaling,
    )


def _llada_config(conf: dict[str, Any]) -> ModelConfig:
    a = "llada"
    _require(a, conf, "block_type", "llama", "block type")
    _require(a, conf, "layer_norm_type", "rms", "norm type")
    _require(a, conf, "include_bias", False, "biases on every projection")
    _require(a, conf, "attention_layer_norm", False, "a LayerNorm over queries and keys")
    _require(a, conf, "alibi", False, "ALiBi positions")
    _require(a, conf, "rope", True, "positions other than RoPE")
    _require(a, conf, "yarn", False, "YaRN RoPE scaling")
    _require(a, conf, "scale_logits", False, "scaled logits")
    _require(a, conf, "input_emb_norm", False, "an input embedding norm")
    _require(a, conf, "block_group_size", 1, "grouped blocks")
    _require(a, conf, "multi_query_attention", None, "multi-query attention flag")
    if conf.get("activation_type", "silu") not in ("silu", "swiglu"):
        raise ConvertError(f"llada checkpoint has activation_type={conf['activation_type']!r}; unimask's MLP is SwiGLU")
    heads = int(conf["n_heads"])
    return ModelConfig(
        vocab_size=int(conf.get("embedding_size") or conf["vocab_size"]),
        d_model=int(conf["d_model"]),
        n_layers=int(conf["n_layers"]),
        n_heads=heads,
        n_kv_heads=int(conf.get("n_kv_heads") or heads),
        d_ff=int(conf["mlp_hidden_size"]),
        max_seq_len=int(conf.get("max_sequence_length", 4096)),
        rope_theta=float(conf.get("rope_theta", 10000.0)),
        norm_eps=float(conf.get("rms_norm_eps", 1e-5)),
        tie_embeddings=bool(conf.get("weight_tying", False)),
        attn_bias=bool(conf.get("include_qkv_bias", False)),
    )


# ------------------------------------------------------------------------------------ weight names
_LLAMA_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.q_proj.bias": "self_attn.q_proj.bias",
    "attn.k_proj.bias": "self_attn.k_proj.bias",
    "attn.v_proj.bias": "self_attn.v_proj.bias",
    "attn.q_norm.weight": "self_attn.q_norm.weight",
    "attn.k_norm.weight": "self_attn.k_norm.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
_LLADA_LAYER = {
    "attn_norm.weight": "attn_norm.weight",
    "attn.q_proj.weight": "q_proj.weight",
    "attn.k_proj.weight": "k_proj.weight",
    "attn.v_proj.weight": "v_proj.weight",
    "attn.q_proj.bias": "q_proj.bias",
    "attn.k_proj.bias": "k_proj.bias",
    "attn.v_proj.bias": "v_proj.bias",
    "attn.o_proj.weight": "attn_out.weight",
    "mlp_norm.weight": "ff_norm.weight",
    "mlp.gate_proj.weight": "ff_proj.weight",
    "mlp.up_proj.weight": "up_proj.weight",
    "mlp.down_proj.weight": "ff_out.weight",
}
_TOP = {
    "llama": {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"},
    "llada": {"embed.weight": "model.transformer.wte.weight", "norm.weight": "model.transformer.ln_f.weight",
              "lm_head.weight": "model.transformer.ff_out.weight"},
}


def hf_name(name: str, arch: str) -> str:
    """The Hugging Face weight name of unimask weight ``name`` in family ``arch``."""
    family = "llada" if arch == "llada" else "llama"
    if name in _TOP[family]:
        return _TOP[family][name]
    if not name.startswith("layers."):
        raise ConvertError(f"weight {name!r} has no counterpart in {arch} (is this a smear model?)")
    _, i, rest = name.split(".", 2)
    layer = _LLADA_LAYER if family == "llada" else _LLAMA_LAYER
    if rest not in layer:
        raise ConvertError(f"weight {name!r} has no counterpart in {arch}")
    return f"model.transformer.blocks.{i}.{layer[rest]}" if family == "llada" else f"model.layers.{i}.{layer[rest]}"


def name_map(cfg: ModelConfig, arch: str) -> dict[str, str]:
    """unimask weight name -> Hugging Face weight name, for every weight a ``cfg`` model stores."""
    with torch.device("meta"):
        names = list(Transformer(cfg).state_dict())
    return {n: hf_name(n, arch) for n in names if not (cfg.tie_embeddings and n == "lm_head.weight")}


def state_from_hf(hf_state: dict[str, torch.Tensor], cfg: ModelConfig, arch: str) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face state dict into unimask's, refusing weights that would be dropped."""
    mapping = name_map(cfg, arch)
    missing = sorted(h for h in mapping.values() if h not in hf_state)
    ignorable = ("rotary_emb.inv_freq",)
    if cfg.tie_embeddings:  # a tied checkpoint may still store the head
        ignorable += (_TOP["llada" if arch == "llada" else "llama"]["lm_head.weight"],)
    unexpected = sorted(k for k in set(hf_state) - set(mapping.values()) if not k.endswith(ignorable))
    if missing or unexpected:
        raise ConvertError(
            f"{arch} weights do not match the unimask layout: missing {missing[:4]}, unmapped {unexpected[:4]} "
            "(an unsupported feature, or a config that does not describe these weights)"
        )
    return {u: hf_state[h].float() for u, h in mapping.items()}


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face directory (``*.safetensors`` preferred, else ``*.bin``)."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        return state
    files = sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise ConvertError(f"{path} has no *.safetensors or pytorch_model*.bin weights")
    state = {}
    for f in files:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


# ---------------------------------------------------------------------------------------- tokens
def _token_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def read_hf_tokenizer(path: Path, conf: dict[str, Any]) -> HFTokenizer:
    """The directory's ``tokenizer.json``; for a Qwen-family model that ships only ``vocab.json`` +
    ``merges.txt`` (Dream's hub repository, whose tokenizer class is remote code) the same BPE
    built by ``transformers``' Qwen2 fast tokenizer, with the added tokens its config lists."""
    file = path / TOKENIZER_FILE
    if file.is_file():
        return HFTokenizer.from_file(str(file))
    slow = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if slow and detect_arch(conf) in ("qwen2", "qwen3", "dream"):
        from transformers import Qwen2TokenizerFast

        return Qwen2TokenizerFast.from_pretrained(path).backend_tokenizer
    raise ConvertError(f"{path} has no {TOKENIZER_FILE}; save the model's fast tokenizer there "
                       "(AutoTokenizer.from_pretrained(...).save_pretrained(dir)) and convert again")


def adopt_tokenizer(path: Path, conf: dict[str, Any]) -> tuple[Tokenizer, dict[str, str], list[str]]:
    """The model's tokenizer with unimask's special tokens: ``(tokenizer, aliases, added tokens)``.

    A role the model already fills (its mask token, EOS, pad) keeps the model's token (an alias);
    every other unimask special token is added after the existing vocabulary.
    """
    hf = read_hf_tokenizer(path, conf)
    tok_conf_file = path / "tokenizer_config.json"
    tok_conf = json.loads(tok_conf_file.read_text()) if tok_conf_file.is_file() else {}
    aliases: dict[str, str] = {}

    def role(name: str, token_id: int | None, token: str | None) -> None:
        found = hf.id_to_token(token_id) if token_id is not None else token
        if found is not None and hf.token_to_id(found) is not None and found != name:
            aliases[name] = found

    role(sp.MASK, _first_id(conf.get("mask_token_id")), _token_of(tok_conf.get("mask_token")))
    role(sp.EOS, _first_id(conf.get("eos_token_id")), _token_of(tok_conf.get("eos_token")))
    role(sp.PAD, _first_id(conf.get("pad_token_id")), _token_of(tok_conf.get("pad_token")))
    if aliases.get(sp.PAD) is not None and aliases[sp.PAD] == aliases.get(sp.EOS, sp.EOS):
        del aliases[sp.PAD]  # a pad that is EOS would make every padded position look like a stop
    before = hf.get_vocab_size(with_added_tokens=True)
    tokenizer = Tokenizer.from_hf_with_specials(hf, aliases)
    added = [t for t in sp.SPECIAL_TOKENS if t not in aliases and tokenizer.token_to_id(t) >= before]
    return tokenizer, aliases, added


def grow_vocab(state: dict[str, torch.Tensor], cfg: ModelConfig, tokenizer: Tokenizer,
               new_ids: list[int], tokenizer_before: int) -> ModelConfig:
    """Resize embedding (and untied head) to fit ``tokenizer``; new token rows are the mean row."""
    if tokenizer_before > cfg.vocab_size:
        raise ConvertError(
            f"the tokenizer has {tokenizer_before} tokens but the model's embedding has {cfg.vocab_size} rows: "
            "they do not belong together; use the tokenizer saved with this model"
        )
    size = max(cfg.vocab_size, tokenizer.vocab_size)
    for name in ("embed.weight",) + (() if cfg.tie_embeddings else ("lm_head.weight",)):
        w = state[name]
        mean = w[:tokenizer_before].mean(0, keepdim=True)
        if size > w.shape[0]:
            w = torch.cat([w, mean.expand(size - w.shape[0], -1)])
        w = w.clone()
        w[new_ids] = mean
        state[name] = w
    return ModelConfig(**{**asdict(cfg), "vocab_size": size})


# ---------------------------------------------------------------------------------------- import
def backbone_extra(arch: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """The decoder an imported checkpoint needs (``sampling.load_backbone`` reads it): LLaDA and
    Dream decode as masked diffusion (Dream shifted) unless a unimask export recorded block diffusion."""
    if arch not in DIFFUSION_EXPORTS:
        return {"backbone": "ar"}
    recorded = dict((conf or {}).get(DECODER_KEY) or {})
    if recorded.get("backbone") == "block_diffusion":
        return {"backbone": "block_diffusion", "block_size": int(recorded["block_size"]),
                "clean_attention": str(recorded["clean_attention"]), "shift": arch == "dream"}
    return {"backbone": "masked_diffusion", "shift": arch == "dream"}


def import_hf_dir(src: str | Path, dst: str | Path) -> Path:
    """Convert a Hugging Face directory into a unimask checkpoint at ``dst`` (written atomically)."""
    src = Path(src)
    conf = read_hf_config(src)
    arch = detect_arch(conf)
    cfg = model_config_from_hf(conf, arch)
    state = state_from_hf(read_hf_weights(src), cfg, arch)
    tok_before = read_hf_tokenizer(src, conf).get_vocab_size(with_added_tokens=True)
    tokenizer, aliases, added = adopt_tokenizer(src, conf)
    new_ids = [tokenizer.token_to_id(t) for t in added]
    cfg = grow_vocab(state, cfg, tokenizer, new_ids, tok_before)
    model = Transformer(cfg)
    model.load_state_dict(state, strict=not cfg.tie_embeddings)
    extra = {
        **backbone_extra(arch, conf),
        "source": {"path": str(src.resolve()), "arch": arch, "model_type": conf.get("model_type"),
                   "vocab_size": int(conf.get("vocab_size") or conf.get("embedding_size") or 0)},
        "special_tokens": tokenizer.special_token_ids,
        "aliased_tokens": aliases,
        "added_tokens": added,
        "convert_version": CONVERT_VERSION,
    }
    return save_checkpoint(dst, model, tokenizer, extra)


# ---------------------------------------------------------------------------------------- export
def _default_export_arch(cfg: ModelConfig, extra: dict[str, Any]) -> str:
    source = (extra.get("source") or {}).get("arch")
    diffusion = extra.get("backbone", "ar") != "ar"
    if source in (DIFFUSION_EXPORTS if diffusion else CAUSAL_EXPORTS):
        return source
    if diffusion:
        return "dream" if extra.get("shift") else "llada"
    return "qwen3" if cfg.qk_norm else "qwen2" if cfg.attn_bias else "llama"


def check_export_arch(arch: str, extra: dict[str, Any]) -> None:
    """Refuse a family that would run the checkpoint differently: causal vs diffusion, shifted or not."""
    if arch not in EXPORTABLE:
        raise ConvertError(f"cannot export to {arch!r}; exportable: {', '.join(EXPORTABLE)}")
    backbone, shift = extra.get("backbone", "ar"), bool(extra.get("shift"))
    if backbone == "ar" and arch in DIFFUSION_EXPORTS:
        raise ConvertError(f"this is an AR (causal) checkpoint, and {arch} is a diffusion layout whose code attends "
                           f"bidirectionally: it would be a different model. Export it with --arch "
                           f"{'|'.join(CAUSAL_EXPORTS)}")
    if backbone != "ar" and arch in CAUSAL_EXPORTS:
        fix = "dream" if shift else "llada"
        raise ConvertError(f"this is a {'shifted ' if shift else ''}{backbone} (diffusion) checkpoint, and {arch} is "
                           f"a causal family that transformers runs left to right: it would be a different model. "
                           f"Export it with --arch {fix} ({'shifted, Dream' if shift else 'unshifted, LLaDA'}'s layout)")
    if arch == "llada" and shift:
        raise ConvertError("this diffusion checkpoint is shifted (position i predicts token i+1, Dream's convention); "
                           "LLaDA predicts token i at position i. Export it with --arch dream")
    if arch == "dream" and backbone != "ar" and not shift:
        raise ConvertError("this diffusion checkpoint is unshifted (position i predicts token i, LLaDA's convention); "
                           "Dream's code reads token i+1 at position i. Export it with --arch llada")


def _check_block(cfg: ModelConfig, arch: str) -> None:
    """Refuse options the export family has no field for."""
    if cfg.smear:
        raise ConvertError("this model uses smear (a previous-token embedding mix) that no Hugging Face family has; "
                           "only smear=false models export")
    if cfg.qk_norm and arch != "qwen3":
        raise ConvertError(f"this model normalises queries and keys (qk_norm), which {arch} lacks; "
                           + ("it has no diffusion export" if arch in DIFFUSION_EXPORTS else "export to qwen3"))
    if arch == "qwen3" and not cfg.qk_norm:
        raise ConvertError("qwen3 always normalises queries and keys and this model does not (qk_norm=false); "
                           "export to llama, mistral or qwen2")
    if cfg.attn_bias and arch not in ("qwen2", "dream", "llada"):
        raise ConvertError(f"this model has q/k/v biases (attn_bias), which {arch} cannot hold alone; export to qwen2")
    if arch in DIFFUSION_EXPORTS and cfg.attn_head_dim not in (None, cfg.d_model // cfg.n_heads):
        raise ConvertError(f"this model's head dim {cfg.head_dim} is not d_model / n_heads, which {arch}'s code "
                           "assumes; it has no diffusion export")
    if arch == "llada" and cfg.rope_scaling:
        raise ConvertError(f"this model scales RoPE ({cfg.rope_scaling['rope_type']}), which LLaDA's config cannot "
                           "express; export it with --arch dream if it is shifted, else it has no diffusion export")


def hf_config(cfg: ModelConfig, arch: str, tokenizer: Tokenizer) -> Any:
    """A ``transformers`` config of causal family ``arch`` describing a ``cfg`` model exactly."""
    from transformers import AutoConfig

    if arch not in CAUSAL_EXPORTS:
        raise ConvertError(f"{arch!r} is not a transformers-native causal family ({', '.join(CAUSAL_EXPORTS)})")
    _check_block(cfg, arch)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        rope = {**cfg.rope_scaling, "rope_theta": cfg.rope_theta}
    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_parameters=rope, tie_word_embeddings=cfg.tie_embeddings, hidden_act="silu",
        initializer_range=cfg.init_std, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
    )
    if arch in ("llama", "qwen3"):
        common.update(attention_bias=False)
    if arch == "llama":
        common.update(mlp_bias=False)
    if arch in ("mistral", "qwen2", "qwen3"):
        common.update(sliding_window=None, use_sliding_window=False)
    return AutoConfig.for_model(arch, **common)


def diffusion_hf_config(cfg: ModelConfig, arch: str, tokenizer: Tokenizer, extra: dict[str, Any]) -> dict[str, Any]:
    """The config.json of a Dream- or LLaDA-layout directory describing a ``cfg`` model exactly."""
    if arch not in DIFFUSION_EXPORTS:
        raise ConvertError(f"{arch!r} is not a diffusion layout ({', '.join(DIFFUSION_EXPORTS)})")
    _check_block(cfg, arch)
    tokens = {"mask_token_id": tokenizer.mask_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id,
              "bos_token_id": tokenizer.bos_id}
    if arch == "dream":
        conf: dict[str, Any] = {
            "architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": cfg.d_model,
            "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_kv_heads, "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.max_seq_len, "rope_theta": cfg.rope_theta,
            "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling else None, "rms_norm_eps": cfg.norm_eps,
            "hidden_act": "silu", "tie_word_embeddings": cfg.tie_embeddings, "use_sliding_window": False,
            "sliding_window": None, "max_window_layers": cfg.n_layers, "attention_dropout": 0.0,
            "initializer_range": cfg.init_std,
        }
    else:
        conf = {
            "architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": cfg.d_model, "n_heads": cfg.n_heads,
            "n_kv_heads": cfg.n_kv_heads, "n_layers": cfg.n_layers, "mlp_hidden_size": cfg.d_ff,
            "vocab_size": cfg.vocab_size, "embedding_size": cfg.vocab_size, "max_sequence_length": cfg.max_seq_len,
            "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.norm_eps, "block_type": "llama",
            "layer_norm_type": "rms", "activation_type": "silu", "include_bias": False,
            "include_qkv_bias": cfg.attn_bias, "attention_layer_norm": False, "alibi": False, "rope": True,
            "weight_tying": cfg.tie_embeddings, "scale_logits": False, "input_emb_norm": False,
            "block_group_size": 1, "multi_query_attention": None, "init_std": cfg.init_std,
        }
    conf.update(tokens, auto_map=_AUTO_MAP[arch], torch_dtype="float32")
    if extra.get("backbone") == "block_diffusion":
        conf[DECODER_KEY] = {"backbone": "block_diffusion", "block_size": int(extra.get("block_size", 16)),
                             "clean_attention": str(extra.get("clean_attention", "causal"))}
    return conf


def diffusion_hf_state(model: Transformer, arch: str) -> dict[str, torch.Tensor]:
    """The model's weights under Dream's or LLaDA's names (Dream's q/k/v biases zero when it has none)."""
    ours = model.state_dict()
    state = {h: ours[u].detach().contiguous().cpu() for u, h in name_map(model.cfg, arch).items()}
    if arch == "dream" and not model.cfg.attn_bias:  # Dream's layout always has them: zero is exact
        for i, layer in enumerate(model.layers):
            for proj in ("q_proj", "k_proj", "v_proj"):
                w = getattr(layer.attn, proj).weight
                state[f"model.layers.{i}.self_attn.{proj}.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
    return state


def to_hf_model(model: Transformer, tokenizer: Tokenizer, arch: str) -> Any:
    """An in-memory ``transformers`` model of causal family ``arch`` with this model's weights."""
    from transformers import AutoModelForCausalLM

    conf = hf_config(model.cfg, arch, tokenizer)
    hf = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
    mapping = name_map(model.cfg, arch)
    ours = model.state_dict()
    state = {h: ours[u] for u, h in mapping.items()}
    if arch == "qwen2" and not model.cfg.attn_bias:  # Qwen2 always has q/k/v biases: zero is exact
        for name, p in hf.state_dict().items():
            if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                state[name] = torch.zeros_like(p)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (model.cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ConvertError(f"weight mapping to {arch} failed: missing {missing[:4]}, unexpected {unexpected[:4]}")
    if model.cfg.tie_embeddings:
        hf.tie_weights()
    return hf.eval()


def _save_hf_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    """``tokenizer.json`` (its own post-processor, so a BOS it adds stays added) + ``tokenizer_config.json``."""
    from transformers import PreTrainedTokenizerFast

    roles = {"eos_token": tokenizer.eos_id, "pad_token": tokenizer.pad_id, "mask_token": tokenizer.mask_id,
             "bos_token": tokenizer.bos_id}
    names = {k: tokenizer.id_to_token(i) for k, i in roles.items() if i is not None}
    PreTrainedTokenizerFast(tokenizer_object=tokenizer.hf, **names).save_pretrained(path)


def export_checkpoint(src: str | Path, dst: str | Path, arch: str | None = None) -> Path:
    """Write a unimask checkpoint as a Hugging Face directory: an AR one as a family
    ``AutoModelForCausalLM`` loads, a diffusion one in Dream's or LLaDA's layout."""
    model, tokenizer, extra = load_checkpoint(src)
    arch = arch or _default_export_arch(model.cfg, extra)
    check_export_arch(arch, extra)
    dst = Path(dst)
    if arch in CAUSAL_EXPORTS:
        hf = to_hf_model(model, tokenizer, arch)
        with atomic_dir(dst) as tmp:
            hf.save_pretrained(tmp)
            _save_hf_tokenizer(tokenizer, tmp)
        return dst
    conf = diffusion_hf_config(model.cfg, arch, tokenizer, extra)
    state = diffusion_hf_state(model, arch)
    with atomic_dir(dst) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(conf, indent=2))
        _save_hf_tokenizer(tokenizer, tmp)
    return dst


# ---------------------------------------------------------------------------------------- direct starts
def is_hf_dir(path: str | Path) -> bool:
    """True for a directory with a Hugging Face ``config.json`` (not a unimask checkpoint)."""
    file = Path(path) / CONFIG
    if not file.is_file():
        return False
    try:
        return "model" not in json.loads(file.read_text())
    except json.JSONDecodeError:
        return False


def cache_root() -> Path:
    return Path(os.environ.get("UNIMASK_CACHE", Path.home() / ".cache" / "unimask")) / "converted"


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256(f"{path.resolve()}|{CONVERT_VERSION}".encode())
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        st = f.stat()
        h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def ensure_checkpoint(path: str | Path) -> Path:
    """A unimask checkpoint for ``path``: itself, or its conversion (cached by content and version)."""
    path = Path(path)
    if not is_hf_dir(path):
        return path
    dst = cache_root() / f"{path.resolve().name}-{_fingerprint(path)}"
    if not (dst / CONFIG).is_file():
        import_hf_dir(path, dst)
    return dst


def convert(src: str | Path, dst: str | Path, arch: str | None = None) -> tuple[Path, str]:
    """Convert in the direction ``src`` calls for: ``(dst, "import" | "export")``."""
    if is_hf_dir(src):
        if arch is not None:
            raise ConvertError("--arch picks the family of an export; an import reads it from config.json")
        return import_hf_dir(src, dst), "import"
    return export_checkpoint(src, dst, arch), "export"

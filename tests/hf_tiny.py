"""Tiny random Hugging Face stand-ins the convert tests build and save (nothing is downloaded).

Each family gets a byte-level BPE tokenizer trained here on stdlib text with the family's own
special tokens (Llama's ``<s>``/``</s>``, Qwen's ``<|endoftext|>``, Dream's ``<|mask|>``, LLaDA's
``<|mdm_mask|>``) and a model whose embedding is padded past the tokenizer, as real ones are.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from conftest import stdlib_sample_texts

SPECIALS = {
    "llama": ["<s>", "</s>", "<unk>"],
    "mistral": ["<s>", "</s>", "<unk>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "qwen3": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "dream": ["<|endoftext|>", "<|beginoftext|>", "<|mask|>"],
    "llada": ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"],
}
EOS = {"llama": "</s>", "mistral": "</s>", "qwen2": "<|endoftext|>", "qwen3": "<|endoftext|>",
       "dream": "<|endoftext|>", "llada": "<|endoftext|>"}
MASK = {"dream": "<|mask|>", "llada": "<|mdm_mask|>"}
TOKENIZER_SIZE = 300
VOCAB = 320  # the embedding is padded past the tokenizer, as in Qwen2.5 and Llama checkpoints


def build_tokenizer(arch: str) -> Tokenizer:
    """A fresh copy of the family's tiny tokenizer (trained once per family and process)."""
    return Tokenizer.from_str(_trained(arch))


@functools.cache
def _trained(arch: str) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_SIZE, special_tokens=SPECIALS[arch], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(stdlib_sample_texts(8), trainer=trainer)
    return tok.to_str()


def add_bos(tok: Tokenizer, bos: str = "<s>") -> Tokenizer:
    """``tok`` with a post-processor that puts ``bos`` before every text, as Llama/Mistral tokenizers do."""
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def save_tokenizer(tok: Tokenizer, arch: str, path: Path, bos: str | None = None) -> None:
    from transformers import PreTrainedTokenizerFast

    extra = {"mask_token": MASK[arch]} if arch in MASK else {}
    if bos is not None:
        extra["bos_token"] = bos
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS[arch], **extra).save_pretrained(path)


def hf_config(arch: str, **over: Any) -> Any:
    from transformers import AutoConfig

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  rms_norm_eps=1e-6, tie_word_embeddings=False)
    extra = {"llama": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
             "mistral": dict(sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
             "qwen2": dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
             "qwen3": dict(head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 1e6})}[arch]
    return AutoConfig.for_model(arch, **{**common, **extra, **over})


def build_native(arch: str, path: Path, seed: int = 0, bos: bool = False, **over: Any) -> Path:
    """A random tiny ``arch`` model (weights perturbed off their init so norms and biases matter);
    ``bos``: its tokenizer puts ``<s>`` before every text (Llama and Mistral families only)."""
    from transformers import AutoModelForCausalLM

    tok = add_bos(build_tokenizer(arch)) if bos else build_tokenizer(arch)
    ids = {"eos_token_id": tok.token_to_id(EOS[arch]), **({"bos_token_id": tok.token_to_id("<s>")} if bos else {})}
    conf = hf_config(arch, **ids, **over)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # norms (ones) and biases (zeros) would hide a mis-mapped weight
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    save_tokenizer(tok, arch, path, bos="<s>" if bos else None)
    return path


def diffusion_state(arch: str, d: int = 64, layers: int = 2, heads: int = 4, kv: int = 2, ff: int = 96,
                    vocab: int = VOCAB, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic LLaDA- or Dream-named state dict (random values, each tensor distinct)."""
    g = torch.Generator().manual_seed(seed)
    hd = d // heads

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    s: dict[str, torch.Tensor] = {}
    if arch == "llada":
        s["model.transformer.wte.weight"] = r(vocab, d)
        s["model.transformer.ln_f.weight"] = 1 + r(d)
        s["model.transformer.ff_out.weight"] = r(vocab, d)
        for i in range(layers):
            p = f"model.transformer.blocks.{i}."
            s.update({p + "attn_norm.weight": 1 + r(d), p + "ff_norm.weight": 1 + r(d),
                      p + "q_proj.weight": r(heads * hd, d), p + "k_proj.weight": r(kv * hd, d),
                      p + "v_proj.weight": r(kv * hd, d), p + "attn_out.weight": r(d, heads * hd),
                      p + "ff_proj.weight": r(ff, d), p + "up_proj.weight": r(ff, d), p + "ff_out.weight": r(d, ff)})
        return s
    s["model.embed_tokens.weight"] = r(vocab, d)
    s["model.norm.weight"] = 1 + r(d)
    s["lm_head.weight"] = r(vocab, d)
    for i in range(layers):
        p = f"model.layers.{i}."
        s.update({p + "input_layernorm.weight": 1 + r(d), p + "post_attention_layernorm.weight": 1 + r(d),
                  p + "self_attn.q_proj.weight": r(heads * hd, d), p + "self_attn.q_proj.bias": r(heads * hd),
                  p + "self_attn.k_proj.weight": r(kv * hd, d), p + "self_attn.k_proj.bias": r(kv * hd),
                  p + "self_attn.v_proj.weight": r(kv * hd, d), p + "self_attn.v_proj.bias": r(kv * hd),
                  p + "self_attn.o_proj.weight": r(d, heads * hd), p + "mlp.gate_proj.weight": r(ff, d),
                  p + "mlp.up_proj.weight": r(ff, d), p + "mlp.down_proj.weight": r(d, ff)})
    return s


def diffusion_config(arch: str, tok: Tokenizer, d: int = 64, layers: int = 2, heads: int = 4, kv: int = 2,
                     ff: int = 96, vocab: int = VOCAB) -> dict[str, Any]:
    """The config.json of a LLaDA or Dream checkpoint, with the keys their own code reads."""
    mask = tok.token_to_id(MASK[arch])
    eos = tok.token_to_id(EOS[arch])
    if arch == "llada":
        return {"architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": d, "n_heads": heads,
                "n_kv_heads": kv, "n_layers": layers, "mlp_hidden_size": ff, "mlp_ratio": 4, "vocab_size": vocab,
                "embedding_size": vocab, "max_sequence_length": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
                "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu", "include_bias": False,
                "include_qkv_bias": False, "attention_layer_norm": False, "alibi": False, "rope": True,
                "weight_tying": False, "scale_logits": False, "input_emb_norm": False, "block_group_size": 1,
                "multi_query_attention": None, "mask_token_id": mask, "eos_token_id": eos, "pad_token_id": eos,
                "init_device": "cpu", "flash_attention": False}
    return {"architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": d, "num_attention_heads": heads,
            "num_key_value_heads": kv, "num_hidden_layers": layers, "intermediate_size": ff, "vocab_size": vocab,
            "max_position_embeddings": 128, "rope_theta": 10000.0, "rope_scaling": None, "rms_norm_eps": 1e-6,
            "hidden_act": "silu", "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
            "max_window_layers": layers, "attention_dropout": 0.0, "mask_token_id": mask, "eos_token_id": eos,
            "pad_token_id": eos, "bos_token_id": tok.token_to_id("<|beginoftext|>")}


def build_diffusion(arch: str, path: Path, seed: int = 0, **shape: int) -> Path:
    """A LLaDA- or Dream-shaped directory: their config keys, weight names and tokenizer specials."""
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(arch)
    (path / "config.json").write_text(json.dumps(diffusion_config(arch, tok, **shape), indent=2))
    save_file(diffusion_state(arch, seed=seed, **shape), str(path / "model.safetensors"))
    save_tokenizer(tok, arch, path)
    return path


def build_ar_dream_pair(root: Path, max_len: int = 2048) -> tuple[Path, Path]:
    """A Qwen2-shaped AR model and a Dream-shaped DLLM sharing its tokenizer plus Dream's two
    added tokens, as Dream was initialised from Qwen2.5."""
    from transformers import PreTrainedTokenizerFast

    ar = build_native("qwen2", root / "qwen2", max_position_embeddings=max_len)
    tok = Tokenizer.from_file(str(ar / "tokenizer.json"))
    tok.add_special_tokens(["<|beginoftext|>", "<|mask|>"])
    dream = root / "dream"
    dream.mkdir(parents=True, exist_ok=True)
    conf = {**diffusion_config("dream", tok), "max_position_embeddings": max_len}
    (dream / "config.json").write_text(json.dumps(conf, indent=2))
    save_file(diffusion_state("dream", seed=1), str(dream / "model.safetensors"))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", mask_token="<|mask|>").save_pretrained(dream)
    return ar, dream

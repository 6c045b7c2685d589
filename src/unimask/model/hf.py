"""Hugging Face interop: export to / import from a ``transformers`` Llama directory, and
``HFCausalLM``, any local ``transformers`` causal LM behind the unimask forward signature.

Our block is Llama's (RMSNorm, half-split RoPE, SwiGLU, GQA), so a causal unimask model maps
onto ``LlamaForCausalLM`` weight for weight and the logits agree. ``unimask.model.convert`` covers
the other families (and special tokens, caching, checkpoint files); this module stays the
in-memory Llama path and the inference wrapper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unimask.io import atomic_dir
from unimask.model.attention import AttentionStructure
from unimask.model.config import ModelConfig
from unimask.model.transformer import Transformer
from unimask.tokenizer import Tokenizer
from unimask.tokenizer import special as sp

_LAYER_MAP = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}


def _to_hf_name(name: str) -> str:
    if name == "embed.weight":
        return "model.embed_tokens.weight"
    if name == "norm.weight":
        return "model.norm.weight"
    if name == "lm_head.weight":
        return "lm_head.weight"
    _, i, rest = name.split(".", 2)
    return f"model.layers.{i}.{_LAYER_MAP[rest]}"


def llama_config(cfg: ModelConfig) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        initializer_range=cfg.init_std,
    )


def to_hf_llama(model: Transformer) -> Any:
    """An in-memory ``LlamaForCausalLM`` with this model's weights."""
    from transformers import LlamaForCausalLM

    if model.cfg.smear:
        raise ValueError("this model uses smear (a previous-token embedding mix) that Llama does not have; "
                         "export_hf supports smear=false models only")
    hf = LlamaForCausalLM(llama_config(model.cfg))
    state = {_to_hf_name(k): v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (model.cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping to Llama failed: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return hf.eval()


def export_hf(model: Transformer, tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write a directory that ``AutoModelForCausalLM.from_pretrained`` loads as Llama."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    hf = to_hf_llama(model)
    with atomic_dir(path) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        PreTrainedTokenizerFast(
            tokenizer_object=tokenizer.hf, eos_token=sp.EOS, pad_token=sp.PAD, mask_token=sp.MASK
        ).save_pretrained(tmp)
    return path


def import_hf(path: str | Path) -> tuple[Transformer, Tokenizer]:
    """Load a Llama-architecture HF directory into a unimask ``Transformer``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    conf = AutoConfig.from_pretrained(path)
    if conf.model_type != "llama":
        raise ValueError(f"{path} holds a {conf.model_type!r} model; import_hf maps Llama only — "
                         "use `unimask convert` (unimask.model.convert) for Mistral, Qwen2/3, LLaDA and Dream, "
                         "or HFCausalLM for inference")
    rope = getattr(conf, "rope_parameters", None) or {}
    cfg = ModelConfig(
        vocab_size=conf.vocab_size,
        d_model=conf.hidden_size,
        n_layers=conf.num_hidden_layers,
        n_heads=conf.num_attention_heads,
        n_kv_heads=conf.num_key_value_heads,
        d_ff=conf.intermediate_size,
        max_seq_len=conf.max_position_embeddings,
        rope_theta=float(rope.get("rope_theta", getattr(conf, "rope_theta", 10000.0))),
        norm_eps=conf.rms_norm_eps,
        tie_embeddings=bool(conf.tie_word_embeddings),
    )
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    hf_state = hf.state_dict()
    model = Transformer(cfg)
    state = {k: hf_state[_to_hf_name(k)] for k in model.state_dict() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    model.load_state_dict(state, strict=False)
    return model.eval(), Tokenizer.load(path)


class HFCache:
    """A ``transformers`` DynamicCache with the unimask cache surface (length, truncate)."""

    def __init__(self) -> None:
        from transformers import DynamicCache

        self.inner = DynamicCache()
        self.length = 0
        self.structure: AttentionStructure | None = None

    def truncate(self, n: int) -> None:
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {n}")
        self.inner.crop(n)
        self.length = n
        self.structure = None if self.structure is None or n == 0 else self.structure[:n]


class HFCausalLM(torch.nn.Module):
    """Any local ``transformers`` causal LM behind ``forward(input_ids, attention, kv_cache)``.

    Only causal structures (with document masking / left padding) are supported: a third-party
    causal model was never trained to attend bidirectionally.
    """

    def __init__(self, path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        from transformers import AutoModelForCausalLM

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
        self.hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).eval()
        if device is not None:
            self.hf.to(device)
        self.tokenizer = Tokenizer.load(path)
        conf = self.hf.config
        self.cfg = ModelConfig(
            vocab_size=max(conf.vocab_size, self.tokenizer.vocab_size),
            d_model=conf.hidden_size,
            n_layers=conf.num_hidden_layers,
            n_heads=conf.num_attention_heads,
            max_seq_len=getattr(conf, "max_position_embeddings", 2048),
        )
        if self.tokenizer.vocab_size > conf.vocab_size:
            self.hf.resize_token_embeddings(self.tokenizer.vocab_size)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> HFCache:
        return HFCache()

    @staticmethod
    def _check_causal(s: AttentionStructure) -> None:
        blk, doc = s.block_ids, s.doc_ids
        causal_blocks = (blk[:, 1:] > blk[:, :-1]) | (doc[:, 1:] != doc[:, :-1]) | (doc[:, 1:] < 0)
        if bool(s.noisy.any()) or not bool(causal_blocks.all()):
            raise ValueError("HFCausalLM supports causal attention only (one block per token, no noisy tokens)")

    def forward(
        self,
        input_ids: Tensor,
        attention: AttentionStructure | None = None,
        kv_cache: HFCache | None = None,
        commit: bool = True,
        logits_to_keep: int = 0,
    ) -> Tensor:
        if not commit:
            raise ValueError("HFCausalLM cannot attend without committing to its cache (commit=False)")
        B, T = input_ids.shape
        start = kv_cache.length if kv_cache is not None else 0
        kwargs: dict[str, Any] = {}
        if attention is not None or start > 0:
            if attention is None:
                new = AttentionStructure.causal(B, T, input_ids.device)
                attention = AttentionStructure(new.doc_ids, new.block_ids + start, new.noisy, new.position_ids + start)
            if attention.seq_len == T and start > 0:
                attention = AttentionStructure.cat([kv_cache.structure, attention])
            self._check_causal(attention)
            mask = attention.dense_mask(slice(start, start + T))
            dtype = self.hf.get_input_embeddings().weight.dtype
            kwargs["attention_mask"] = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
            kwargs["position_ids"] = attention.position_ids[:, start:]
        if kv_cache is not None:
            kwargs["past_key_values"] = kv_cache.inner
            kwargs["use_cache"] = True
        out = self.hf(input_ids=input_ids, logits_to_keep=logits_to_keep, **kwargs)
        if kv_cache is not None:
            kv_cache.length = start + T
            kv_cache.structure = attention
        return out.logits

"""Byte-level BPE tokenizer: training with Hugging Face ``tokenizers``, loading, saving.

``Tokenizer`` wraps a ``tokenizers.Tokenizer`` and exposes the ids of every special token
as attributes (``eos_id``, ``mask_id``, ``sentinel_ids`` ...) so no other module looks
tokens up by string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from unimask.io import atomic_write_text
from unimask.tokenizer import special as sp

TOKENIZER_FILE = "tokenizer.json"
# Beside tokenizer.json when an adopted tokenizer plays a unimask role with a token of its own
# (e.g. LLaDA's mask token, Llama's "</s>" as EOS): {"aliases": {unimask token: its token}}.
ALIASES_FILE = "unimask_special_tokens.json"


class TokenizerError(ValueError):
    """A tokenizer file is missing, unreadable or lacks unimask's special tokens."""


class Tokenizer:
    """unimask's tokenizer: text <-> ids, with named special-token ids."""

    def __init__(self, hf: HFTokenizer, aliases: Mapping[str, str] | None = None):
        self.hf = hf
        self.aliases = dict(aliases or {})
        bad = sorted(set(self.aliases) - set(sp.SPECIAL_TOKENS))
        if bad:
            raise TokenizerError(f"aliases name {bad} which are not unimask special tokens")
        missing = [t for t in sp.SPECIAL_TOKENS if hf.token_to_id(self.aliases.get(t, t)) is None]
        if missing:
            raise TokenizerError(
                f"tokenizer lacks unimask special tokens {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                "train one with `unimask tokenizer train` or add them with Tokenizer.from_hf_with_specials()"
            )
        ids = {t: hf.token_to_id(self.aliases.get(t, t)) for t in sp.SPECIAL_TOKENS}
        self.eos_id = ids[sp.EOS]
        self.pad_id = ids[sp.PAD]
        self.mask_id = ids[sp.MASK]
        self.sep_id = ids[sp.SEP]
        self.eom_id = ids[sp.EOM]
        self.fim_prefix_id = ids[sp.FIM_PREFIX]
        self.fim_middle_id = ids[sp.FIM_MIDDLE]
        self.fim_suffix_id = ids[sp.FIM_SUFFIX]
        self.system_id = ids[sp.SYSTEM]
        self.user_id = ids[sp.USER]
        self.assistant_id = ids[sp.ASSISTANT]
        self.tool_id = ids[sp.TOOL]
        self.end_of_turn_id = ids[sp.END_OF_TURN]
        self.tool_call_start_id = ids[sp.TOOL_CALL_START]
        self.tool_call_end_id = ids[sp.TOOL_CALL_END]
        self.think_start_id = ids[sp.THINK_START]
        self.think_end_id = ids[sp.THINK_END]
        self.sentinel_ids = [ids[s] for s in sp.SENTINELS]
        self.special_ids = frozenset(ids.values())
        self.special_token_ids = ids  # unimask special token -> id in this vocabulary
        # What the tokenizer's own post-processor puts before every text (Llama's and Mistral's
        # "<s>"; nothing for unimask's tokenizers, Qwen's or Dream's): prompts start with it, as
        # ``transformers``' tokenizer(prompt) does before generate().
        self.prompt_prefix_ids = _template_prefix(hf)
        self.bos_id = self.prompt_prefix_ids[0] if len(self.prompt_prefix_ids) == 1 else None

    # ------------------------------------------------------------------ basics
    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special-token strings inside ``text`` map to their ids."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a generation prompt: ``encode`` after the tokenizer's own prefix (its BOS, if it adds one)."""
        return self.prompt_prefix_ids + self.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.hf.id_to_token(i)

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path) -> Path:
        """Save as ``tokenizer.json`` (``path`` may be the file or its directory)."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / TOKENIZER_FILE
        atomic_write_text(path, self.hf.to_str(pretty=True))
        if self.aliases:
            atomic_write_text(path.parent / ALIASES_FILE, json.dumps({"aliases": self.aliases}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load from a ``tokenizer.json`` file or a directory holding one (our checkpoints, HF dirs)."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise TokenizerError(
                f"no tokenizer at {path}: expected a tokenizer.json file or a directory containing one"
            )
        try:
            hf = HFTokenizer.from_file(str(file))
        except Exception as e:  # tokenizers raises a plain Exception on bad JSON
            raise TokenizerError(f"cannot read tokenizer {file}: {e}") from e
        alias_file = file.parent / ALIASES_FILE
        if alias_file.is_file():
            try:
                aliases = json.loads(alias_file.read_text())["aliases"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise TokenizerError(f"cannot read {alias_file} ({e}); the checkpoint is damaged") from e
            return cls(hf, aliases)
        if path.is_dir() and hf.token_to_id(sp.MASK) is None:
            return cls.from_hf_with_specials(hf)
        return cls(hf)

    @classmethod
    def from_hf_with_specials(cls, hf: HFTokenizer, aliases: Mapping[str, str] | None = None) -> Tokenizer:
        """Adopt a third-party tokenizer, adding whichever unimask special tokens it lacks.

        ``aliases`` maps a unimask special token to a token the tokenizer already has for that
        role (e.g. ``{"<|mask|>": "<|mdm_mask|>"}``); those are used, not added.
        """
        aliases = dict(aliases or {})
        hf.add_special_tokens([t for t in sp.SPECIAL_TOKENS if hf.token_to_id(aliases.get(t, t)) is None])
        return cls(hf, aliases)

    def check_vocab(self, model_vocab_size: int) -> None:
        """Raise if ids this tokenizer can produce would index past a model's embedding table."""
        if self.vocab_size > model_vocab_size:
            raise TokenizerError(
                f"tokenizer has {self.vocab_size} tokens but the model's vocab_size is {model_vocab_size}; "
                "use the tokenizer the model was trained with, or set model.vocab_size >= tokenizer size"
            )


def _template_prefix(hf: HFTokenizer) -> list[int]:
    """The ids ``hf``'s post-processor adds in front of a single text (empty when it adds none)."""
    probe = "x"
    plain = hf.encode(probe, add_special_tokens=False).ids
    full = hf.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start]
    return []


def train_tokenizer(
    texts: Iterable[str] | Iterator[str],
    vocab_size: int = 8192,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer on ``texts``; special tokens get the lowest ids."""
    n_special = len(sp.SPECIAL_TOKENS)
    min_vocab = n_special + 256
    if vocab_size < min_vocab:
        raise TokenizerError(f"vocab_size {vocab_size} too small: need at least {min_vocab} (256 bytes + specials)")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(sp.SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(hf)


def tokenizer_info(tok: Tokenizer) -> dict[str, object]:
    """A small JSON-able summary (for logs and ``data stats``)."""
    return {"vocab_size": tok.vocab_size, "special": {t: tok.token_to_id(t) for t in sp.SPECIAL_TOKENS[:17]}}




"""The special-token vocabulary every stage of unimask relies on.

One place names them all: the EOS/pad/mask tokens, CodeGen2 infill sentinels, FIM markers,
chat roles and the agent's tool-call and thinking delimiters. They are added to every
tokenizer unimask trains and must all be present in any tokenizer it loads.
"""

from __future__ import annotations

EOS = "<|endoftext|>"
PAD = "<|pad|>"
MASK = "<|mask|>"  # masked-diffusion noise token
SEP = "<sep>"  # CodeGen2: separates the corrupted file from its spans
EOM = "<eom>"  # CodeGen2: end of a masked span
FIM_PREFIX = "<fim_prefix>"
FIM_MIDDLE = "<fim_middle>"
FIM_SUFFIX = "<fim_suffix>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
TOOL = "<|tool|>"  # a tool observation turn
END_OF_TURN = "<|end|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
THINK_START = "<think>"
THINK_END = "</think>"

NUM_SENTINELS = 16  # <mask_1> .. <mask_16>: spans per sequence for span corruption / infill


def sentinel(i: int) -> str:
    """The i-th (1-based) span sentinel, as in CodeGen2's released format."""
    if not 1 <= i <= NUM_SENTINELS:
        raise ValueError(f"sentinel index {i} out of range 1..{NUM_SENTINELS}")
    return f"<mask_{i}>"


SENTINELS = [sentinel(i) for i in range(1, NUM_SENTINELS + 1)]

SPECIAL_TOKENS: list[str] = [
    EOS,
    PAD,
    MASK,
    SEP,
    EOM,
    FIM_PREFIX,
    FIM_MIDDLE,
    FIM_SUFFIX,
    SYSTEM,
    USER,
    ASSISTANT,
    TOOL,
    END_OF_TURN,
    TOOL_CALL_START,
    TOOL_CALL_END,
    THINK_START,
    THINK_END,
    *SENTINELS,
]

"""DocQA: question answering over the standard library's documentation with search/open tools.

The offline stand-in for the DLLM Agent paper's web search. Questions are generated from the
corpus with verified answers, 1-3 hops (lookups on the oracle's path), five types:

* ``module``  (1 hop): which module defines NAME? -- read it off a search result line;
* ``summary`` (1 hop): which function does THIS (its docstring summary)? -- the top search hit;
* ``default`` (2 hops): the default of PARAM in QUALNAME -- search, open, read the signature;
* ``summary_default`` (2 hops): the default of PARAM in the function that does THIS;
* ``mention_default`` (3 hops): the default of PARAM in the function named only inside the docs of
  QUALNAME (``Like quote(), but ...``) -- search, open QUALNAME, open the function it names.

Names the agent must copy into a tool call (a qualified name in the question, a module in a search
line) are written in backticks: a byte-level BPE then splits them exactly as inside the call's
JSON string, so copying is token-for-token (a leading space would give different tokens).

Splits are by module (a stable hash), so test modules are unseen in training. Observations are
compact on purpose: tiny models are fine-tuned on these trajectories. The oracle policy solves
tasks through the real tools, reading answers from observations (not from the gold), with an
optional rate of realistic recoveries (a query that misses, then a retry); the miss is
marked ``trainable: false``, so SFT teaches the retry but not the mistake.
"""

from unimask.envs.docqa.baselines import breakdown, trivial_baseline
from unimask.envs.docqa.dataset import (
    build_dataset,
    name_pieces,
    shuffle_hits,
    swap_names,
    to_training_record,
    write_trajectories,
)
from unimask.envs.docqa.environment import (
    DIFFICULTY,
    HOPS,
    INSTRUCTIONS,
    TASK_TYPES,
    DocQAConfig,
    DocQAEnvironment,
)
from unimask.envs.docqa.oracle import ByteTokenizer, oracle_action, oracle_trajectories

__all__ = [
    "DIFFICULTY", "HOPS", "INSTRUCTIONS", "TASK_TYPES", "ByteTokenizer", "DocQAConfig", "DocQAEnvironment",
    "breakdown", "build_dataset", "name_pieces", "oracle_action", "oracle_trajectories", "shuffle_hits", "swap_names",
    "to_training_record", "trivial_baseline", "write_trajectories",
]

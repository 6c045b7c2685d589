"""``flex_attention`` block masks built from an ``AttentionStructure``.

The mask is built for the exact query and key lengths of the call (a known bug class is a
BlockMask built for another length or block size, silently masking the wrong tiles).
"""

from __future__ import annotations

from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from unimask.model.attention import AttentionStructure


def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def build_block_mask(structure: AttentionStructure, q_len: int, q_offset: int = 0, block_size: int = 128) -> BlockMask:
    """BlockMask for queries ``q_offset .. q_offset+q_len`` over all ``structure.seq_len`` keys."""
    return create_block_mask(
        structure.mask_mod(q_offset),
        B=structure.batch_size,
        H=None,
        Q_LEN=q_len,
        KV_LEN=structure.seq_len,
        device=structure.doc_ids.device,
        BLOCK_SIZE=block_size,
    )

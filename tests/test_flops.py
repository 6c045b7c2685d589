"""The benchmark's FLOP formula on a shape worked out by hand."""

from unimask.model.config import ModelConfig
from unimask.train.flops import matmul_params, train_flops_per_token


def test_flops_known_shape():
    cfg = ModelConfig(vocab_size=100, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=16)
    # per layer: q,o 8*8 each; k,v 8*4 each (one kv head of width 4); MLP 3*8*16; head 100*8
    assert matmul_params(cfg) == 2 * (64 * 2 + 32 * 2 + 384) + 800
    assert train_flops_per_token(cfg, 10) == 6 * 1952 + 12 * 2 * 2 * 4 * 10
    # half the tokens scored: the fused head projects only those
    assert train_flops_per_token(cfg, 10, head_share=0.5) == 6 * (1952 - 400) + 12 * 2 * 2 * 4 * 10

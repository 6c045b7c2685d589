"""The output head fused with a weighted token cross-entropy: training without ``[B, L, V]`` logits.

``linear_cross_entropy(h, weight, labels, loss_weights)`` equals
``(loss_weights * CE(h @ weight.T, labels)).sum(1).mean()`` (each example's weighted sum, the
batch mean: the objectives' loss convention), but

* only scored positions (weight != 0, label >= 0) reach the head: the clean half of a block-
  diffusion layout and unscored context cost no vocabulary projection at all;
* the head runs over chunks of tokens, and each chunk's gradient is formed in the forward pass
  while its logits are still in cache (the approach of Liger-Kernel's fused linear cross-entropy):
  the head's logits, probabilities and their gradient are never materialised for the batch.

Matmuls run in the autocast dtype when autocast is on; the softmax is always fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MB in fp32): stays in cache on a CPU, large enough for a GPU


def _compute_dtype(t: Tensor) -> torch.dtype:
    kind = t.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else t.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, labels: Tensor, scale: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        dtype = _compute_dtype(h)
        w = weight.to(dtype)
        grad_h = torch.empty(h.shape, dtype=h.dtype, device=h.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            for lo in range(0, h.shape[0], chunk):
                hc = h[lo : lo + chunk].to(dtype)
                y, s = labels[lo : lo + chunk], scale[lo : lo + chunk]
                logp = torch.log_softmax((hc @ w.t()).float(), -1)
                total -= (logp.gather(1, y[:, None])[:, 0] * s).sum()
                probs = logp.exp_()  # the softmax, in place
                probs[torch.arange(len(y), device=y.device), y] -= 1.0
                g = probs.mul_(s[:, None]).to(dtype)  # d(loss)/d(logits) of this chunk
                grad_h[lo : lo + chunk] = (g @ w).to(h.dtype)
                if dtype == torch.float32:
                    grad_w.addmm_(g.t(), hc)
                else:  # a low-precision matmul per chunk, accumulated in fp32 across chunks
                    grad_w += (g.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None


def linear_cross_entropy(h: Tensor, weight: Tensor, labels: Tensor, loss_weights: Tensor,
                         chunk: int | None = None) -> Tensor:
    """Scalar: the batch mean of each example's ``sum_i loss_weights[i] * CE(h[i] @ weight.T, labels[i])``.

    ``h`` ``[B, L, d]`` (the final hidden states, normed), ``weight`` ``[V, d]`` (the output head),
    ``labels`` long and ``loss_weights`` float ``[B, L]``. ``chunk``: tokens per head chunk
    (default: ``CHUNK_ELEMENTS // V``, at least 64).
    """
    B, L, d = h.shape
    scored = (loss_weights != 0) & (labels >= 0)
    index = scored.reshape(-1).nonzero()[:, 0]  # the one host sync: which rows reach the head
    rows = h.reshape(B * L, d).index_select(0, index)
    scale = loss_weights.reshape(-1).index_select(0, index).float() / B
    n = chunk or max(64, CHUNK_ELEMENTS // weight.shape[0])
    return _LinearCrossEntropy.apply(rows, weight, labels.reshape(-1).index_select(0, index), scale, n)

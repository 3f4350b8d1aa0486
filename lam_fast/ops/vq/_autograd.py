"""Autograd of the fused VQ lookups (C++ ``lam_fast::vq_quantize``, Triton
``lam_fast_triton::vq_lookup``): both map (x, codebook) to (quantized, indices, commitment_loss,
codebook_loss) with the gradients of ``vq_losses`` (straight-through quantized, commitment loss to x,
codebook loss to the chosen codes).
"""

from __future__ import annotations

import torch


def fake_lookup(x, codebook):
    return x.new_empty(x.shape), x.new_empty((x.shape[0],), dtype=torch.int64), x.new_empty(()), x.new_empty(())


def setup_context(ctx, inputs, output):
    x, codebook = inputs
    _quantized, indices, _commitment, _codebook_loss = output
    ctx.save_for_backward(x, codebook, indices)


def backward(ctx, grad_quantized, _grad_indices, grad_commitment, grad_codebook_loss):
    """d quantized/dx = I (straight through); d commitment/dx = 2 (x - c) / (M D);
    d codebook_loss/dc_k = sum over rows that chose k of 2 (c_k - x) / (M D). fp32, one rounding."""
    x, codebook, indices = ctx.saved_tensors
    want_codebook = ctx.needs_input_grad[1] and grad_codebook_loss is not None
    if grad_commitment is None and not want_codebook:
        return grad_quantized, None
    diff = x.float() - codebook[indices].float()
    per_element = 2.0 / max(x.numel(), 1)  # x empty: every gradient is empty too
    grad_x = grad_quantized
    if grad_commitment is not None:
        from_loss = diff * (grad_commitment.float() * per_element)
        grad_x = (from_loss if grad_x is None else grad_x.float() + from_loss).to(x.dtype)
    grad_codebook = None
    if want_codebook:
        contribution = diff * (grad_codebook_loss.float() * -per_element)
        # index_put_ with accumulate, as the autograd of codebook[indices] in the reference
        grad_codebook = (
            torch.zeros(codebook.shape, dtype=torch.float32, device=codebook.device)
            .index_put_((indices,), contribution, accumulate=True)
            .to(codebook.dtype)
        )
    return grad_x, grad_codebook

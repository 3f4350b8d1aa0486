"""Triton backend of the VQ lookup: ``torch.ops.lam_fast_triton.vq_lookup``, a custom op over the
fused search + gather + squared-error kernel in ``kernels/vq.py``, with the fake-tensor rule and the
autograd of ``vq_losses`` (straight-through quantized, commitment loss to x, codebook loss to the
chosen codes) so it runs under ``torch.compile(fullgraph=True)``.

Importing this module imports triton, so a checkout without it raises ImportError here (the
dispatcher reports it as the reason ``triton`` is unavailable).
"""

from __future__ import annotations

from lam_fast.ops._triton import require_triton

require_triton()

import torch  # noqa: E402

from lam_fast._kernels import vq as _k  # noqa: E402
from lam_fast.ops.vq.reference import nearest_code_reference  # noqa: E402


@torch.library.custom_op("lam_fast_triton::vq_lookup", mutates_args=())
def _vq_lookup(
    x: torch.Tensor, codebook: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: (M, D), codebook: (K, D) -> quantized (M, D) = codebook[indices], indices (M,) int64,
    commitment and codebook losses (0-dim, equal values: mean |x - code|^2), in x's dtype."""
    codes, indices, sqerr, uncertain = _k.vq_fused(x, codebook)
    # The kernel proved the other rows' answers equal the float64 reference; redo the rest with it.
    redo = uncertain.nonzero().squeeze(1)
    if redo.numel():
        rows = x[redo]
        chosen = nearest_code_reference(rows, codebook)
        indices[redo] = chosen
        codes[redo] = codebook[chosen]
        sqerr[redo] = (rows.float() - codebook[chosen].float()).square().sum(1)
    loss = (sqerr.sum() / x.numel()).to(x.dtype)  # M = 0 or D = 0: NaN, as F.mse_loss
    return codes, indices, loss, loss.clone()


@_vq_lookup.register_fake
def _(x, codebook):
    return x.new_empty(x.shape), x.new_empty((x.shape[0],), dtype=torch.int64), x.new_empty(()), x.new_empty(())


def _setup(ctx, inputs, output):
    x, codebook = inputs
    _quantized, indices, _commitment, _codebook_loss = output
    ctx.save_for_backward(x, codebook, indices)


def _backward(ctx, grad_quantized, _grad_indices, grad_commitment, grad_codebook_loss):
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


_vq_lookup.register_autograd(_backward, setup_context=_setup)


def vq_lookup_triton(x: torch.Tensor, codebook: torch.Tensor):
    """Same contract as the reference path ``vq_losses(x, codebook, nearest_code_reference(...))``:
    x: (M, D), codebook: (K, D) -> (quantized, indices, commitment_loss, codebook_loss)."""
    return _vq_lookup(x, codebook)

"""Triton backend of the VQ lookup: ``torch.ops.lam_fast_triton.vq_lookup``, a custom op over the
fused search + gather + squared-error kernel in ``kernels/lam_fast_kernels/vq.py``, with the fake-tensor rule and the
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
from lam_fast.ops.vq._autograd import backward, fake_lookup, setup_context  # noqa: E402
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


_vq_lookup.register_fake(fake_lookup)


_vq_lookup.register_autograd(backward, setup_context=setup_context)


def vq_lookup_triton(x: torch.Tensor, codebook: torch.Tensor):
    """Same contract as the reference path ``vq_losses(x, codebook, nearest_code_reference(...))``:
    x: (M, D), codebook: (K, D) -> (quantized, indices, commitment_loss, codebook_loss)."""
    return _vq_lookup(x, codebook)

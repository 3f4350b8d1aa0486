"""Public VQ codebook lookup op."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lam_fast.ops._dispatch import KERNEL_DTYPES, define_op
from lam_fast.ops._triton import TRITON_DEVICES
from lam_fast.ops.vq.reference import vq_losses

# A backend maps (x, codebook) to (quantized, indices, commitment_loss, codebook_loss) with the
# autograd of ``vq_losses``; the index searches of reference/cpp/cuda share that gather and loss
# code, the Triton backend fuses search, gather and loss sums in one pass over the codebook.
OP = define_op("vq_lookup", auto_order={"cpu": ("cpp", "reference"), "cuda": ("cuda", "triton", "reference")})


def _with_losses(nearest):
    """A full VQ backend from a nearest-code search: indices from ``nearest``, then the shared
    gather and losses (``vq_losses``)."""

    def lookup(x, codebook):
        indices = nearest(x, codebook)
        quantized, commitment, codebook_loss = vq_losses(x, codebook, indices)
        return quantized, indices, commitment, codebook_loss

    return lookup


def _load_reference():
    from lam_fast.ops.vq.reference import nearest_code_reference

    return _with_losses(nearest_code_reference)


def _load_cpp():
    from lam_fast.ops.vq.cpp import vq_lookup_cpp

    return vq_lookup_cpp


def _load_cuda():
    from lam_fast.ops.vq.cuda import nearest_code_cuda

    return _with_losses(nearest_code_cuda)


def _load_triton():
    from lam_fast.ops.vq.triton import vq_lookup_triton

    return vq_lookup_triton


OP.register("reference", ("cpu", "cuda"), _load_reference)
OP.register("cpp", ("cpu",), _load_cpp, KERNEL_DTYPES)
OP.register("cuda", ("cuda",), _load_cuda, KERNEL_DTYPES)
OP.register("triton", TRITON_DEVICES, _load_triton, KERNEL_DTYPES)


class VQOutput(NamedTuple):
    quantized: torch.Tensor  # (M, D), forward value codebook[indices], gradient straight through to x
    indices: torch.Tensor  # (M,) int64
    commitment_loss: torch.Tensor  # mean |x - sg(c)|^2 (weight it by beta = 0.25 in the loss)
    codebook_loss: torch.Tensor  # mean |sg(x) - c|^2


def vq_lookup(x: torch.Tensor, codebook: torch.Tensor, *, backend: str = "auto") -> VQOutput:
    """Nearest-code quantisation of x: (M, D) against codebook: (K, D).

    Indices are the nearest code by L2 (ties to the lowest index). The fast backends never
    materialise the M x K distance matrix; every backend gives the same indices and the autograd
    of ``vq_losses`` (straight-through quantized, commitment and codebook losses).
    """
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"vq_lookup: x must be (M, D) and codebook (K, D), got {tuple(x.shape)} and {tuple(codebook.shape)}")
    if codebook.shape[0] < 1:
        raise ValueError("vq_lookup: the codebook is empty")
    if x.dtype != codebook.dtype or not x.is_floating_point():
        raise TypeError(f"vq_lookup: x and codebook must share a floating dtype, got {x.dtype} and {codebook.dtype}")
    _, impl = OP.select(backend, x.device, x.dtype)
    return VQOutput(*impl(x, codebook))

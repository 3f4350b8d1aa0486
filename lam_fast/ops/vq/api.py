"""Public VQ codebook lookup op."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lam_fast.ops._dispatch import define_op
from lam_fast.ops.vq.reference import vq_losses

OP = define_op("vq_lookup", auto_order={"cpu": ("cpp", "reference"), "cuda": ("cuda", "triton", "reference")})


def _load_reference():
    from lam_fast.ops.vq.reference import nearest_code_reference

    return nearest_code_reference


def _load_cpp():
    from lam_fast.ops.vq.cpp import nearest_code_cpp

    return nearest_code_cpp


OP.register("reference", ("cpu", "cuda"), _load_reference)
OP.register("cpp", ("cpu",), _load_cpp)


class VQOutput(NamedTuple):
    quantized: torch.Tensor  # (M, D), forward value codebook[indices], gradient straight through to x
    indices: torch.Tensor  # (M,) int64
    commitment_loss: torch.Tensor  # mean |x - sg(c)|^2 (weight it by beta = 0.25 in the loss)
    codebook_loss: torch.Tensor  # mean |sg(x) - c|^2


def vq_lookup(x: torch.Tensor, codebook: torch.Tensor, *, backend: str = "auto") -> VQOutput:
    """Nearest-code quantisation of x: (M, D) against codebook: (K, D).

    Indices are the nearest code by L2 (ties to the lowest index). The backends differ only in how
    they find the indices (never materialising M x K in the fast ones); gather and losses are shared.
    """
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"vq_lookup: x must be (M, D) and codebook (K, D), got {tuple(x.shape)} and {tuple(codebook.shape)}")
    if codebook.shape[0] < 1:
        raise ValueError("vq_lookup: the codebook is empty")
    if x.dtype != codebook.dtype or not x.is_floating_point():
        raise TypeError(f"vq_lookup: x and codebook must share a floating dtype, got {x.dtype} and {codebook.dtype}")
    _, nearest = OP.select(backend, x.device)
    indices = nearest(x, codebook)
    quantized, commitment, codebook_loss = vq_losses(x, codebook, indices)
    return VQOutput(quantized, indices, commitment, codebook_loss)

"""C++ backend of the VQ lookup (``csrc/vq.cpp``): ``torch.ops.lam_fast.vq_quantize`` (search,
gather and losses in one call; the CPU backend) and ``torch.ops.lam_fast.vq_nearest`` (the search
alone; its CUDA kernel is the CUDA backend, ``cuda.py``, whose gather and losses run in torch).

Importing this module imports the compiled extension, so an unbuilt checkout raises ImportError
here (the dispatcher reports it as the reason ``cpp`` is unavailable).
"""

from __future__ import annotations

import torch

import lam_fast._C  # noqa: F401  (registers torch.ops.lam_fast.*)
from lam_fast.ops.vq._autograd import backward, fake_lookup, setup_context


@torch.library.register_fake("lam_fast::vq_nearest")
def _vq_nearest_fake(x, codebook):
    return x.new_empty((x.shape[0],), dtype=torch.int64)


torch.library.register_fake("lam_fast::vq_quantize")(fake_lookup)
torch.library.register_autograd("lam_fast::vq_quantize", backward, setup_context=setup_context)


def vq_lookup_cpp(x: torch.Tensor, codebook: torch.Tensor):
    """The whole lookup in C++ (search, gather and loss in one call): same contract as the reference
    path ``vq_losses(x, codebook, nearest_code_reference(x, codebook))``."""
    return torch.ops.lam_fast.vq_quantize(x, codebook)


def nearest_code_cpp(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Same contract as ``nearest_code_reference``: int64 (M,) nearest code, ties to the lowest index."""
    return torch.ops.lam_fast.vq_nearest(x.detach(), codebook.detach())


"""C++ backend of the VQ nearest-code search: ``torch.ops.lam_fast.vq_nearest`` (``csrc/vq.cpp``).

Importing this module imports the compiled extension, so an unbuilt checkout raises ImportError
here (the dispatcher reports it as the reason ``cpp`` is unavailable).
"""

from __future__ import annotations

import torch

import lam_fast._C  # noqa: F401  (registers torch.ops.lam_fast.*)


@torch.library.register_fake("lam_fast::vq_nearest")
def _vq_nearest_fake(x, codebook):
    return x.new_empty((x.shape[0],), dtype=torch.int64)


def nearest_code_cpp(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Same contract as ``nearest_code_reference``: int64 (M,) nearest code, ties to the lowest index."""
    return torch.ops.lam_fast.vq_nearest(x.detach(), codebook.detach())


def require_cuda_kernels() -> None:
    """Raise RuntimeError unless lam_fast._C was built with its CUDA kernel (csrc/cuda/vq_nearest.cu)."""
    if not torch._C._dispatch_has_kernel_for_dispatch_key("lam_fast::vq_nearest", "CUDA"):
        raise RuntimeError(
            "lam_fast._C was built without CUDA kernels (build with CUDA_HOME set and a CUDA torch, "
            "or LAM_FAST_BUILD_CUDA=1)"
        )

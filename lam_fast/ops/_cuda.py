"""The check the CUDA backends' loaders share: were the CUDA kernels built into ``lam_fast._C``?

The CUDA kernels (``csrc/cuda/``) are registered on the CUDA dispatch key of the same
``torch.ops.lam_fast`` ops as the C++ CPU kernels, so an op's schema, fake tensor and autograd rules
are shared (``<op>/cpp.py`` registers them; a torch.library op has one of each for every device).
An extension built without CUDA (no ``CUDA_HOME``, no ``LAM_FAST_BUILD_CUDA=1``) is a normal
install: :class:`NotBuilt`, which the dispatcher reports without a warning.
"""

from __future__ import annotations

import torch

from lam_fast.ops._dispatch import NotBuilt


def require_cuda_kernels(*ops: str) -> None:
    """Raise NotBuilt unless every ``lam_fast::<op>`` has a CUDA kernel (import lam_fast._C first)."""
    for name in ops:
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"lam_fast::{name}", "CUDA"):
            raise NotBuilt(f"lam_fast._C was built without CUDA kernels (lam_fast::{name} has none; build with "
                           "CUDA_HOME set and a CUDA torch, or LAM_FAST_BUILD_CUDA=1)")

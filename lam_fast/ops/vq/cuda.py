"""CUDA backend of the VQ lookup: the nearest-code search of ``csrc/cuda/vq_nearest.cu``, the CUDA
dispatch-key kernel of ``torch.ops.lam_fast.vq_nearest`` (whose fake rule ``cpp.py`` registers),
followed by the shared gather and losses in torch (``vq_losses``, see ``api.py``).

Importing this module raises ModuleNotFoundError when lam_fast._C is not built and NotBuilt when
it was built without CUDA kernels.
"""

from __future__ import annotations

from lam_fast.ops._cuda import require_cuda_kernels
from lam_fast.ops.vq.cpp import nearest_code_cpp

require_cuda_kernels("vq_nearest")

#: Same contract as ``nearest_code_reference``, on CUDA tensors (torch dispatches the same op there).
nearest_code_cuda = nearest_code_cpp

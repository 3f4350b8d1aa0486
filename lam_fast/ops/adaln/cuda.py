"""CUDA backend of the frame-wise AdaLN ops: the kernels of ``csrc/cuda/adaln.cu``.

They are the CUDA dispatch-key kernels of the very ``torch.ops.lam_fast.{adaln_modulate,
gated_residual}_{fwd,bwd}`` ops whose CPU kernels the C++ backend calls, so the callables are the
C++ backend's (torch dispatches on the tensors' device) and the fake-tensor and autograd rules are
the ones ``cpp.py`` registers. Importing this module raises ModuleNotFoundError when lam_fast._C is
not built and NotBuilt when it was built without CUDA kernels.
"""

from __future__ import annotations

from lam_fast.ops._cuda import require_cuda_kernels
from lam_fast.ops.adaln.cpp import adaln_modulate_cpp, gated_residual_cpp

require_cuda_kernels("adaln_modulate_fwd", "adaln_modulate_bwd", "gated_residual_fwd", "gated_residual_bwd")

#: Same contract as ``adaln_modulate_reference``, on CUDA tensors.
adaln_modulate_cuda = adaln_modulate_cpp
#: Same contract as ``gated_residual_reference``, on CUDA tensors.
gated_residual_cuda = gated_residual_cpp

"""C++ backend of the frame-wise AdaLN ops: autograd and fake-tensor rules for the
``torch.ops.lam_fast.{adaln_modulate,gated_residual}_{fwd,bwd}`` kernels in ``csrc/`` (the rules
serve every device: the CUDA backend, ``cuda.py``, calls the same ops on CUDA tensors).

Importing this module imports the compiled extension, so an unbuilt checkout raises ImportError
here (the dispatcher reports it as the reason ``cpp`` is unavailable).
"""

from __future__ import annotations

import torch

import lam_fast._C  # noqa: F401  (registers torch.ops.lam_fast.*)
from lam_fast.ops.adaln import _autograd as _rules

_OPS = torch.ops.lam_fast


# Fake tensors and autograd shared with the Triton ops (same schemas), around this backend's bwd ops.
torch.library.register_fake("lam_fast::adaln_modulate_fwd", _rules.adaln_modulate_fwd_fake)
torch.library.register_fake("lam_fast::adaln_modulate_bwd", _rules.adaln_modulate_bwd_fake)
torch.library.register_fake("lam_fast::gated_residual_fwd", _rules.gated_residual_fwd_fake)
torch.library.register_fake("lam_fast::gated_residual_bwd", _rules.gated_residual_bwd_fake)
torch.library.register_autograd(
    "lam_fast::adaln_modulate_fwd",
    _rules.adaln_modulate_backward(_OPS.adaln_modulate_bwd),
    setup_context=_rules.adaln_modulate_setup,
)
torch.library.register_autograd(
    "lam_fast::gated_residual_fwd",
    _rules.gated_residual_backward(_OPS.gated_residual_bwd),
    setup_context=_rules.gated_residual_setup,
)


def adaln_modulate_cpp(x, shift, scale, *, frame_tokens: int, eps: float):
    """Same contract as ``adaln_modulate_reference``; x: (B, T*N, C), shift/scale: (B, T, C)."""
    out, _mean, _rstd = _OPS.adaln_modulate_fwd(x, shift, scale, frame_tokens, eps)
    return out


def gated_residual_cpp(x, y, gate, *, frame_tokens: int):
    """Same contract as ``gated_residual_reference``; x, y: (B, T*N, C), gate: (B, T, C)."""
    return _OPS.gated_residual_fwd(x, y, gate, frame_tokens)


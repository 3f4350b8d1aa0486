"""Triton backend of the frame-wise AdaLN ops: ``torch.ops.lam_fast_triton.{adaln_modulate,
gated_residual}_{fwd,bwd}`` custom ops over the launchers in ``kernels/lam_fast_kernels/adaln.py``, with fake-tensor
and autograd rules so they run under ``torch.compile(fullgraph=True)``.

Importing this module imports triton, so a checkout without it raises ImportError here (the
dispatcher reports it as the reason ``triton`` is unavailable).
"""

from __future__ import annotations

from lam_fast.ops._triton import require_triton

require_triton()

import torch  # noqa: E402

from lam_fast._kernels import adaln as _k  # noqa: E402
from lam_fast.ops.adaln import _autograd as _rules  # noqa: E402


@torch.library.custom_op("lam_fast_triton::adaln_modulate_fwd", mutates_args=())
def _adaln_modulate_fwd(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frame_tokens: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: (B, T*N, C), shift/scale: (B, T, C) -> out (B, T*N, C), mean and rstd (B, T*N) fp32."""
    return _k.modulate_fwd(x, shift, scale, frame_tokens, eps)


@torch.library.custom_op("lam_fast_triton::adaln_modulate_bwd", mutates_args=())
def _adaln_modulate_bwd(
    grad_out: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
    frame_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """-> grad_x (B, T*N, C), grad_shift and grad_scale (B, T, C)."""
    return _k.modulate_bwd(grad_out, x, scale, mean, rstd, frame_tokens)


@torch.library.custom_op("lam_fast_triton::gated_residual_fwd", mutates_args=())
def _gated_residual_fwd(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, frame_tokens: int) -> torch.Tensor:
    """x, y: (B, T*N, C), gate: (B, T, C) -> x + gate_t * y (B, T*N, C)."""
    return _k.gated_fwd(x, y, gate, frame_tokens)


@torch.library.custom_op("lam_fast_triton::gated_residual_bwd", mutates_args=())
def _gated_residual_bwd(
    grad_out: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, frame_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> grad_y (B, T*N, C), grad_gate (B, T, C)."""
    return _k.gated_bwd(grad_out, y, gate, frame_tokens)


# Fake tensors and autograd shared with the C++ ops (same schemas), around this backend's bwd ops.
_adaln_modulate_fwd.register_fake(_rules.adaln_modulate_fwd_fake)
_adaln_modulate_bwd.register_fake(_rules.adaln_modulate_bwd_fake)
_gated_residual_fwd.register_fake(_rules.gated_residual_fwd_fake)
_gated_residual_bwd.register_fake(_rules.gated_residual_bwd_fake)
_adaln_modulate_fwd.register_autograd(
    _rules.adaln_modulate_backward(_adaln_modulate_bwd), setup_context=_rules.adaln_modulate_setup
)
_gated_residual_fwd.register_autograd(
    _rules.gated_residual_backward(_gated_residual_bwd), setup_context=_rules.gated_residual_setup
)


def adaln_modulate_triton(x, shift, scale, *, frame_tokens: int, eps: float):
    """Same contract as ``adaln_modulate_reference``; x: (B, T*N, C), shift/scale: (B, T, C)."""
    out, _mean, _rstd = _adaln_modulate_fwd(x, shift, scale, frame_tokens, eps)
    return out


def gated_residual_triton(x, y, gate, *, frame_tokens: int):
    """Same contract as ``gated_residual_reference``; x, y: (B, T*N, C), gate: (B, T, C)."""
    return _gated_residual_fwd(x, y, gate, frame_tokens)

"""C++ backend of the frame-wise AdaLN ops: autograd and fake-tensor rules for the
``torch.ops.lam_fast.{adaln_modulate,gated_residual}_{fwd,bwd}`` kernels in ``csrc/``.

Importing this module imports the compiled extension, so an unbuilt checkout raises ImportError
here (the dispatcher reports it as the reason ``cpp`` is unavailable).
"""

from __future__ import annotations

import torch

import lam_fast._C  # noqa: F401  (registers torch.ops.lam_fast.*)

_OPS = torch.ops.lam_fast


@torch.library.register_fake("lam_fast::adaln_modulate_fwd")
def _adaln_modulate_fwd_fake(x, shift, scale, frame_tokens, eps):
    b, length, c = x.shape
    stats = (b, length)
    return x.new_empty((b, length, c)), x.new_empty(stats, dtype=torch.float32), x.new_empty(stats, dtype=torch.float32)


@torch.library.register_fake("lam_fast::adaln_modulate_bwd")
def _adaln_modulate_bwd_fake(grad_out, x, scale, mean, rstd, frame_tokens):
    return x.new_empty(x.shape), scale.new_empty(scale.shape), scale.new_empty(scale.shape)


@torch.library.register_fake("lam_fast::gated_residual_fwd")
def _gated_residual_fwd_fake(x, y, gate, frame_tokens):
    return x.new_empty(x.shape)


@torch.library.register_fake("lam_fast::gated_residual_bwd")
def _gated_residual_bwd_fake(grad_out, y, gate, frame_tokens):
    return y.new_empty(y.shape), gate.new_empty(gate.shape)


def _adaln_modulate_setup(ctx, inputs, output):
    x, _shift, scale, frame_tokens, _eps = inputs
    _out, mean, rstd = output
    ctx.save_for_backward(x, scale, mean, rstd)
    ctx.frame_tokens = frame_tokens


def _adaln_modulate_backward(ctx, grad_out, _grad_mean, _grad_rstd):
    # mean and rstd are saved statistics, not results: the public op never returns them.
    x, scale, mean, rstd = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(x)
    grad_x, grad_shift, grad_scale = _OPS.adaln_modulate_bwd(grad_out, x, scale, mean, rstd, ctx.frame_tokens)
    return grad_x, grad_shift, grad_scale, None, None


def _gated_residual_setup(ctx, inputs, output):
    _x, y, gate, frame_tokens = inputs
    ctx.save_for_backward(y, gate)
    ctx.frame_tokens = frame_tokens


def _gated_residual_backward(ctx, grad_out):
    y, gate = ctx.saved_tensors
    grad_y, grad_gate = _OPS.gated_residual_bwd(grad_out, y, gate, ctx.frame_tokens)
    return grad_out, grad_y, grad_gate, None  # d(x + gate*y)/dx is the identity: no copy


torch.library.register_autograd(
    "lam_fast::adaln_modulate_fwd", _adaln_modulate_backward, setup_context=_adaln_modulate_setup
)
torch.library.register_autograd(
    "lam_fast::gated_residual_fwd", _gated_residual_backward, setup_context=_gated_residual_setup
)


def adaln_modulate_cpp(x, shift, scale, *, frame_tokens: int, eps: float):
    """Same contract as ``adaln_modulate_reference``; x: (B, T*N, C), shift/scale: (B, T, C)."""
    out, _mean, _rstd = _OPS.adaln_modulate_fwd(x, shift, scale, frame_tokens, eps)
    return out


def gated_residual_cpp(x, y, gate, *, frame_tokens: int):
    """Same contract as ``gated_residual_reference``; x, y: (B, T*N, C), gate: (B, T, C)."""
    return _OPS.gated_residual_fwd(x, y, gate, frame_tokens)


def require_cuda_kernels() -> None:
    """Raise RuntimeError unless lam_fast._C was built with its CUDA kernels (csrc/cuda/adaln.cu)."""
    for name in ("adaln_modulate_fwd", "adaln_modulate_bwd", "gated_residual_fwd", "gated_residual_bwd"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"lam_fast::{name}", "CUDA"):
            raise RuntimeError(
                "lam_fast._C was built without CUDA kernels (build with CUDA_HOME set and a CUDA torch, "
                "or LAM_FAST_BUILD_CUDA=1)"
            )

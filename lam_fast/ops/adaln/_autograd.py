"""Fake-tensor and autograd rules shared by the AdaLN kernel backends.

The C++/CUDA ops (``torch.ops.lam_fast.*``, ``csrc/``) and the Triton ops
(``torch.ops.lam_fast_triton.*``, ``kernels/lam_fast_kernels/adaln.py``) have the same four schemas:

- ``adaln_modulate_fwd(x, shift, scale, frame_tokens, eps) -> (out, mean, rstd)``
- ``adaln_modulate_bwd(grad_out, x, scale, mean, rstd, frame_tokens) -> (grad_x, grad_shift, grad_scale)``
- ``gated_residual_fwd(x, y, gate, frame_tokens) -> out``
- ``gated_residual_bwd(grad_out, y, gate, frame_tokens) -> (grad_y, grad_gate)``

so their fake (meta) functions and the autograd of the two forward ops live here; each backend
registers them on its own ops, with the backward built around its own ``*_bwd`` op.
"""

from __future__ import annotations

from typing import Callable

import torch

# ---- fake tensors --------------------------------------------------------------------------------


def adaln_modulate_fwd_fake(x, shift, scale, frame_tokens, eps):
    b, length, c = x.shape
    stats = (b, length)
    return x.new_empty((b, length, c)), x.new_empty(stats, dtype=torch.float32), x.new_empty(stats, dtype=torch.float32)


def adaln_modulate_bwd_fake(grad_out, x, scale, mean, rstd, frame_tokens):
    return x.new_empty(x.shape), scale.new_empty(scale.shape), scale.new_empty(scale.shape)


def gated_residual_fwd_fake(x, y, gate, frame_tokens):
    return x.new_empty(x.shape)


def gated_residual_bwd_fake(grad_out, y, gate, frame_tokens):
    return y.new_empty(y.shape), gate.new_empty(gate.shape)


# ---- autograd of the forward ops -----------------------------------------------------------------


def adaln_modulate_setup(ctx, inputs, output):
    x, _shift, scale, frame_tokens, _eps = inputs
    _out, mean, rstd = output
    ctx.save_for_backward(x, scale, mean, rstd)
    ctx.frame_tokens = frame_tokens


def adaln_modulate_backward(modulate_bwd: Callable) -> Callable:
    """The backward of an ``adaln_modulate_fwd`` op whose gradients the op ``modulate_bwd`` computes."""

    def backward(ctx, grad_out, _grad_mean, _grad_rstd):
        # mean and rstd are saved statistics, not results: the public op never returns them.
        x, scale, mean, rstd = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(x)
        grad_x, grad_shift, grad_scale = modulate_bwd(grad_out, x, scale, mean, rstd, ctx.frame_tokens)
        return grad_x, grad_shift, grad_scale, None, None

    return backward


def gated_residual_setup(ctx, inputs, output):
    _x, y, gate, frame_tokens = inputs
    ctx.save_for_backward(y, gate)
    ctx.frame_tokens = frame_tokens


def gated_residual_backward(gated_bwd: Callable) -> Callable:
    """The backward of a ``gated_residual_fwd`` op whose gradients the op ``gated_bwd`` computes."""

    def backward(ctx, grad_out):
        y, gate = ctx.saved_tensors
        grad_y, grad_gate = gated_bwd(grad_out, y, gate, ctx.frame_tokens)
        return grad_out, grad_y, grad_gate, None  # d(x + gate*y)/dx is the identity: no copy

    return backward

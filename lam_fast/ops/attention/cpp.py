"""C++ backend of frame-causal attention: autograd and fake-tensor rules for the
``torch.ops.lam_fast.attention_{fwd,bwd}`` kernels in ``csrc/attention.cpp``.

The kernels tile by frame, so they never build the (T*N)^2 mask or score matrix and skip every
fully masked block; RoPE is applied while packing q/k into their fp32 tiles, from the same cos/sin
tables the reference uses (``Rope3D.cos_sin``, indexed by absolute token position).

Importing this module imports the compiled extension, so an unbuilt checkout raises ImportError
here (the dispatcher reports it as the reason ``cpp`` is unavailable).
"""

from __future__ import annotations

import torch

import lam_fast._C  # noqa: F401  (registers torch.ops.lam_fast.*)
from lam_fast.ops.attention.rope import Rope3D

_OPS = torch.ops.lam_fast


@torch.library.register_fake("lam_fast::attention_fwd")
def _attention_fwd_fake(q, k, v, cos, sin, frame_tokens, q_frame_offset, scale):
    b, h, lq, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((b, h, lq), dtype=torch.float32)


@torch.library.register_fake("lam_fast::attention_bwd")
def _attention_bwd_fake(grad_out, q, k, v, out, lse, cos, sin, frame_tokens, q_frame_offset, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup(ctx, inputs, output):
    q, k, v, cos, sin, frame_tokens, q_frame_offset, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cos, sin)
    ctx.args = (frame_tokens, q_frame_offset, scale)


def _backward(ctx, grad_out, _grad_lse):
    # lse is a saved statistic, not a result: the public op never returns it.
    q, k, v, out, lse, cos, sin = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = _OPS.attention_bwd(grad_out, q, k, v, out, lse, cos, sin, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


torch.library.register_autograd("lam_fast::attention_fwd", _backward, setup_context=_setup)


def attention_cpp(q, k, v, *, frame_tokens: int, rope: Rope3D | None, scale: float, q_frame_offset: int):
    """Same contract as ``attention_reference``: q (B, H, Lq, D) for frames from ``q_frame_offset``,
    k, v (B, H, Lk, D) from frame 0."""
    cos = sin = None
    if rope is not None:
        rows = max(k.shape[-2], q_frame_offset * frame_tokens + q.shape[-2])
        cos, sin = rope.cos_sin(0, -(-rows // frame_tokens), q.device)
    out, _lse = _OPS.attention_fwd(q, k, v, cos, sin, frame_tokens, q_frame_offset, scale)
    return out

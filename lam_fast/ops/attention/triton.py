"""Triton backend of frame_causal_attention: the autograd boundary over ``lam_fast._kernels.attention``.

Forward and backward are ``torch.library`` custom ops (``lam_fast_triton::attention_fwd`` /
``attention_bwd``, a namespace of their own so they never clash with the C++ ``lam_fast::`` library)
with fake implementations and an autograd rule, so ``torch.compile(fullgraph=True)`` traces through
them. On CPU tensors the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import weakref

from lam_fast.ops._triton import require_triton

require_triton()

import torch  # noqa: E402

from lam_fast._kernels import attention as _k  # noqa: E402
from lam_fast.ops.attention.rope import Rope3D  # noqa: E402

_Tensor = torch.Tensor


@torch.library.custom_op("lam_fast_triton::attention_fwd", mutates_args=())
def _attention_fwd(
    q: _Tensor, k: _Tensor, v: _Tensor, inv_freq: _Tensor | None,
    frame_tokens: int, grid_w: int, scale: float, q_frame_offset: int,
) -> tuple[_Tensor, _Tensor]:
    """(out: (B, H, Lq, D), lse: (B, H, Lq) fp32); inv_freq None means no RoPE."""
    return _k.attention_fwd(q, k, v, frame_tokens=frame_tokens, scale=scale, q_frame_offset=q_frame_offset,
                            inv_freq=inv_freq, grid_w=grid_w)


@_attention_fwd.register_fake
def _attention_fwd_fake(q, k, v, inv_freq, frame_tokens, grid_w, scale, q_frame_offset):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("lam_fast_triton::attention_bwd", mutates_args=())
def _attention_bwd(
    grad_out: _Tensor, q: _Tensor, k: _Tensor, v: _Tensor, out: _Tensor, lse: _Tensor, inv_freq: _Tensor | None,
    frame_tokens: int, grid_w: int, scale: float, q_frame_offset: int,
) -> tuple[_Tensor, _Tensor, _Tensor]:
    """(dq, dk, dv), shaped and strided like q, k, v; gradients w.r.t. the un-rotated q and k."""
    return _k.attention_bwd(grad_out, q, k, v, out, lse, frame_tokens=frame_tokens, scale=scale,
                            q_frame_offset=q_frame_offset, inv_freq=inv_freq, grid_w=grid_w)


@_attention_bwd.register_fake
def _attention_bwd_fake(grad_out, q, k, v, out, lse, inv_freq, frame_tokens, grid_w, scale, q_frame_offset):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, inv_freq, frame_tokens, grid_w, scale, q_frame_offset = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, inv_freq)
    ctx.args = (frame_tokens, grid_w, scale, q_frame_offset)


def _backward(ctx, grad_out, _grad_lse):
    # lse is a saved statistic, never returned by the public op: it has no gradient to pass on
    q, k, v, out, lse, inv_freq = ctx.saved_tensors
    dq, dk, dv = _attention_bwd(grad_out, q, k, v, out, lse, inv_freq, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


_attention_fwd.register_autograd(_backward, setup_context=_setup_context)

# Rope3D.inv_freq lives on the CPU; one copy per (rope, device) instead of a host-to-device copy per call
_INV_FREQ: weakref.WeakKeyDictionary[Rope3D, dict[torch.device, _Tensor]] = weakref.WeakKeyDictionary()


def _inv_freq(rope: Rope3D, device: torch.device) -> _Tensor:
    if torch.compiler.is_compiling():  # keep dynamo out of the weak dictionary: the copy is a graph op
        return rope.inv_freq.to(device)
    per_device = _INV_FREQ.setdefault(rope, {})
    if device not in per_device:
        per_device[device] = rope.inv_freq.to(device)
    return per_device[device]


def attention_triton(q, k, v, *, frame_tokens: int, rope: Rope3D | None, scale: float, q_frame_offset: int):
    """Same contract as ``attention_reference``: q: (B, H, Lq, D) for frames starting at
    q_frame_offset; k, v: (B, H, Lk, D) from frame 0; returns (B, H, Lq, D) in q's dtype."""
    inv_freq = None if rope is None else _inv_freq(rope, q.device)
    grid_w = 1 if rope is None else rope.grid[1]
    out, _lse = _attention_fwd(q, k, v, inv_freq, frame_tokens, grid_w, scale, q_frame_offset)
    return out

"""Public frame-causal attention op."""

from __future__ import annotations

import math

import torch

from lam_fast.ops._dispatch import KERNEL_DTYPES, define_op
from lam_fast.ops._triton import TRITON_DEVICES
from lam_fast.ops.attention.cache import KVCache
from lam_fast.ops.attention.rope import Rope3D

OP = define_op(
    "frame_causal_attention",
    auto_order={"cpu": ("cpp", "sdpa", "reference"), "cuda": ("triton", "sdpa", "reference")},
)


def _load_reference():
    from lam_fast.ops.attention.reference import attention_reference

    return attention_reference


def _load_sdpa():
    from lam_fast.ops.attention.reference import attention_sdpa

    return attention_sdpa


def _load_cpp():
    from lam_fast.ops.attention.cpp import attention_cpp

    return attention_cpp


def _load_triton():
    from lam_fast.ops.attention.triton import attention_triton

    return attention_triton


OP.register("reference", ("cpu", "cuda"), _load_reference)
OP.register("sdpa", ("cpu", "cuda"), _load_sdpa)
OP.register("cpp", ("cpu",), _load_cpp, KERNEL_DTYPES)
OP.register("triton", TRITON_DEVICES, _load_triton, KERNEL_DTYPES)


def frame_causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    frame_tokens: int,
    rope: Rope3D | None = None,
    scale: float | None = None,
    kv_cache: KVCache | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Block-causal attention over frames.

    q, k, v: (B, H, T*N, D) with N = ``frame_tokens`` tokens per frame, frame-major. Every token of
    frame t attends to every token of frames <= t (no mask inside a frame). Returns (B, H, T*N, D).

    rope: a :class:`Rope3D` applied to q and k inside the op (positions (t, h, w) from the token
    index; with a cache, t counts from the first cached frame).
    scale: softmax scale, default 1/sqrt(D).
    kv_cache: when given, q/k/v hold only the new frames; their keys and values are appended to the
    cache and the queries attend to all cached frames plus the new ones (frame-causally among the
    new ones). Used for frame-by-frame rollouts; not for training (the cache is written in place).
    backend: "auto" | "reference" | "sdpa" | "cpp" | "triton"; see ``lam_fast.ops.backend_status``.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must all be (B, H, T*N, D) with equal shapes, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise TypeError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not isinstance(frame_tokens, int) or frame_tokens < 1 or q.shape[2] % frame_tokens:
        raise ValueError(f"frame_tokens={frame_tokens!r} must be a positive int dividing the sequence length {q.shape[2]}")
    if rope is not None and (rope.frame_tokens != frame_tokens or rope.head_dim != q.shape[-1]):
        raise ValueError(
            f"rope is for {rope.frame_tokens} tokens/frame and head_dim {rope.head_dim}, "
            f"inputs have {frame_tokens} and {q.shape[-1]}"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    # select before the cache grows: an unavailable backend leaves the cache as it was
    _, impl = OP.select(backend, q.device, q.dtype)
    offset = 0
    if kv_cache is not None:
        offset = kv_cache.num_frames
        k, v = kv_cache.append(k, v, frame_tokens)
    return impl(q, k, v, frame_tokens=frame_tokens, rope=rope, scale=scale, q_frame_offset=offset)

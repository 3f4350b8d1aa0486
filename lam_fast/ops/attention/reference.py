"""Reference frame-causal attention: eager PyTorch with a dense boolean mask (the oracle)."""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F

from lam_fast.ops.attention.rope import Rope3D

#: Calls of each implementation here ("reference", "sdpa"), counted where the attention is computed,
#: so a test can prove that the one it asked for ran. Not counted while torch.compile traces (a
#: guarded global would force a recompile per call).
RUNS: Counter[str] = Counter()


def _count(name: str) -> None:
    if not torch.compiler.is_compiling():
        RUNS[name] += 1


def frame_causal_mask(q_len: int, k_len: int, frame_tokens: int, q_frame_offset: int, device) -> torch.Tensor:
    """Boolean (q_len, k_len): query token i (frame q_frame_offset + i // N) may see key j (frame j // N)."""
    q_frame = q_frame_offset + torch.arange(q_len, device=device) // frame_tokens
    k_frame = torch.arange(k_len, device=device) // frame_tokens
    return k_frame[None, :] <= q_frame[:, None]


def _rotate(q, k, rope: Rope3D | None, q_frame_offset: int):
    if rope is None:
        return q, k
    return rope.rotate(q, q_frame_offset), rope.rotate(k, 0)


def attention_reference(q, k, v, *, frame_tokens: int, rope: Rope3D | None, scale: float, q_frame_offset: int):
    """q: (B, H, Lq, D) for frames starting at q_frame_offset; k, v: (B, H, Lk, D) from frame 0."""
    _count("reference")
    q, k = _rotate(q, k, rope, q_frame_offset)
    mask = frame_causal_mask(q.shape[-2], k.shape[-2], frame_tokens, q_frame_offset, q.device)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    return torch.matmul(probs, v)


def attention_sdpa(q, k, v, *, frame_tokens: int, rope: Rope3D | None, scale: float, q_frame_offset: int):
    """PyTorch SDPA with the dense frame-causal boolean mask: what every public codebase does."""
    _count("sdpa")
    q, k = _rotate(q, k, rope, q_frame_offset)
    mask = frame_causal_mask(q.shape[-2], k.shape[-2], frame_tokens, q_frame_offset, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

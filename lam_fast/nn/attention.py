from __future__ import annotations

import torch
from torch import nn

from lam_fast.ops import KVCache, Rope3D, frame_causal_attention


class FrameCausalSelfAttention(nn.Module):
    """Multi-head self-attention with a frame-causal mask and 3D RoPE. x: (B, T*N, C)."""

    def __init__(self, dim: int, heads: int, *, backend: str = "auto"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.backend = heads, dim // heads, backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, *, frame_tokens: int, rope: Rope3D | None, cache: KVCache | None = None):
        b, length, c = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = frame_causal_attention(
            qkv[0], qkv[1], qkv[2], frame_tokens=frame_tokens, rope=rope, kv_cache=cache, backend=self.backend
        )
        return self.proj(out.transpose(1, 2).reshape(b, length, c))

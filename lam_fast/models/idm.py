"""Inverse dynamics model g(s_t, s_{t+1}) -> latent action (PAPER.md leaves the architecture open)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lam_fast.models.config import TransformerConfig
from lam_fast.nn import ADAMW, MUON, declare


class _Block(nn.Module):
    """Pre-norm transformer block with full (bidirectional) attention over one frame pair."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class InverseDynamicsModel(nn.Module):
    """Latent action from the current and next state only.

    Architecture (our choice): token i of the pair is ``Linear([s_t[i], s_{t+1}[i] - s_t[i]])`` plus a
    learned position embedding (N tokens, so the pair costs what one frame costs); ``depth`` pre-norm
    transformer blocks with full attention; attentive pooling (one learned query cross-attending
    over the tokens); LayerNorm and a linear head to ``out_dim`` (128, or 256 = mean and
    log-variance for the noisy regulariser).

    s_t, s_next: (M, N, C_s) -> (M, out_dim).
    """

    def __init__(self, state_dim: int, num_tokens: int, out_dim: int, cfg: TransformerConfig):
        super().__init__()
        w = cfg.width
        self.embed = nn.Linear(2 * state_dim, w)
        self.pos_embed = nn.Parameter(torch.randn(num_tokens, w) * 0.02)
        self.blocks = nn.ModuleList(_Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.query_embed = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.pool = nn.MultiheadAttention(w, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, out_dim)
        # inputs (pair embedding, positions, pooling query) take AdamW; the head is a hidden matrix
        # of the joint model (its output z feeds the predictor's conditioning MLP)
        declare(self, ADAMW, "embed.weight", "embed.bias", "pos_embed", "query_embed")
        declare(self.head, MUON, "weight")

    def forward(self, s_t: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        if s_t.shape != s_next.shape or s_t.dim() != 3:
            raise ValueError(f"IDM takes two (M, N, C) states, got {tuple(s_t.shape)} and {tuple(s_next.shape)}")
        x = self.embed(torch.cat([s_t, s_next - s_t], dim=-1)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        pooled, _ = self.pool(self.query_embed.expand(x.shape[0], -1, -1), x, x, need_weights=False)
        return self.head(self.norm(pooled[:, 0]))

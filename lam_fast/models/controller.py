"""Controllers of PAPER.md section 4: map a real action a_t (and the previous state s_{t-1}) to the
latent action z_t the world model understands, trained with L2 to the IDM's latents.

- :class:`MLPController`: actions only. The paper reports it collapses towards "no movement",
  because latent actions are camera-relative: the same real action means different latents in
  different views, which an action-only map cannot express.
- :class:`CrossAttentionController` (the one the paper uses): 2 self-attention blocks over the
  tokens of s_{t-1}, then a cross-attention block in which the action embedding (a 3-layer MLP to
  the width) queries those tokens; the one output token is projected to the latent dimension.

Training: ``lam_fast.training.controller.train_controller``.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class MLPController(nn.Module):
    """z = MLP(a). actions: (B, A) -> (B, Z); ``states`` is accepted and ignored (same interface)."""

    def __init__(self, action_dim: int, latent_dim: int, hidden: int = 256):
        super().__init__()
        self.net = _mlp([action_dim, hidden, hidden, latent_dim])

    def forward(self, actions: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(actions)


class CrossAttentionController(nn.Module):
    """z = Linear(CrossAttn(query = MLP(a), keys/values = SelfAttn^2(tokens of s_{t-1}))).

    actions: (B, A); states: (B, N, C) the encoder state before the action. Returns (B, Z).
    """

    def __init__(self, action_dim: int, state_dim: int, num_tokens: int, latent_dim: int, *, width: int = 128,
                 heads: int = 4, self_blocks: int = 2):
        super().__init__()
        self.embed = nn.Linear(state_dim, width)
        self.pos = nn.Parameter(torch.zeros(1, num_tokens, width))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(self_blocks)
        )
        self.action = _mlp([action_dim, width, width, width])
        self.norm_q, self.norm_kv = nn.LayerNorm(width), nn.LayerNorm(width)
        self.cross = nn.MultiheadAttention(width, heads, batch_first=True)
        self.out_mlp = nn.Sequential(nn.LayerNorm(width), _mlp([width, 4 * width, width]))
        self.head = nn.Linear(width, latent_dim)

    def forward(self, actions: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        if states is None or states.dim() != 3:
            raise ValueError(f"states must be (B, N, C), got {None if states is None else tuple(states.shape)}")
        tokens = self.embed(states) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        query = self.action(actions)[:, None]  # (B, 1, W)
        kv = self.norm_kv(tokens)
        attended, _ = self.cross(self.norm_q(query), kv, kv, need_weights=False)
        x = query + attended
        x = x + self.out_mlp(x)
        return self.head(x[:, 0])

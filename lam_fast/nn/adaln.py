from __future__ import annotations

import torch
from torch import nn

from lam_fast.nn.attention import FrameCausalSelfAttention
from lam_fast.nn.optim_groups import ADAMW, declare
from lam_fast.ops import KVCache, Rope3D, adaln_modulate, gated_residual


class AdaLNZeroBlock(nn.Module):
    """DiT block with frame-wise AdaLN-zero conditioning.

    ``(shift1, scale1, gate1, shift2, scale2, gate2) = Linear(SiLU(c_t))``, zero-initialised, so
    the block is the identity at initialisation; frame t's six vectors modulate only its N tokens.
    x: (B, T*N, C); c: (B, T, C_cond).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, cond_dim: int | None = None, *, backend: str = "auto"):
        super().__init__()
        self.backend = backend
        self.attn = FrameCausalSelfAttention(dim, heads, backend=backend)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or dim, 6 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        *,
        frame_tokens: int,
        rope: Rope3D | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        n, be = frame_tokens, self.backend
        h = adaln_modulate(x, shift1, scale1, frame_tokens=n, backend=be)
        x = gated_residual(x, self.attn(h, frame_tokens=n, rope=rope, cache=cache), gate1, frame_tokens=n, backend=be)
        h = adaln_modulate(x, shift2, scale2, frame_tokens=n, backend=be)
        return gated_residual(x, self.mlp(h), gate2, frame_tokens=n, backend=be)


class FinalLayer(nn.Module):
    """Frame-wise modulated LayerNorm then a linear head: (B, T*N, C) -> (B, T*N, out_dim)."""

    def __init__(self, dim: int, out_dim: int, cond_dim: int | None = None, *, backend: str = "auto"):
        super().__init__()
        self.backend = backend
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or dim, 2 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)
        self.unembed = declare(nn.Linear(dim, out_dim), ADAMW)  # the output head

    def forward(self, x: torch.Tensor, c: torch.Tensor, *, frame_tokens: int) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.unembed(adaln_modulate(x, shift, scale, frame_tokens=frame_tokens, backend=self.backend))

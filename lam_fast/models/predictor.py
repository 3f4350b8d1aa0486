"""The world model p(s_{0:t}, z_t): a frame-causal ViT with 3D RoPE and frame-wise AdaLN-zero."""

from __future__ import annotations

import torch
from torch import nn

from lam_fast.models.config import TransformerConfig
from lam_fast.nn import ADAMW, MUON, AdaLNZeroBlock, FinalLayer, declare
from lam_fast.ops import KVCache, Rope3D


class PredictorCache:
    """One :class:`KVCache` per block, for frame-by-frame rollouts."""

    def __init__(self, depth: int, max_frames: int | None = None):
        self.layers = [KVCache(max_frames) for _ in range(depth)]

    @property
    def num_frames(self) -> int:
        return self.layers[0].num_frames

    def repeat_batch(self, repeats: int) -> "PredictorCache":
        """Every layer's cache with each batch entry repeated ``repeats`` times (see KVCache)."""
        out = PredictorCache(0)
        out.layers = [layer.repeat_batch(repeats) for layer in self.layers]
        return out


class Predictor(nn.Module):
    """Predicts s_{t+1} for every frame t at once (teacher forcing).

    states: (B, T, N, C_s); cond: (B, T, C_z) with z_t conditioning frame t, or None when the
    model has no latent (deterministic baseline: a learned constant conditioning vector).
    Returns (B, T, N, C_s): output frame t is the prediction of s_{t+1} from s_{0..t} and z_{0..t}
    (with ``residual``, the network's output is added to s_t). The output layer is zero-initialised,
    so an untrained predictor returns s_t (residual) or 0.
    """

    def __init__(self, state_dim: int, grid: tuple[int, int], cond_dim: int, cfg: TransformerConfig, *,
                 rope_base: float = 10000.0, residual: bool = True, backend: str = "auto"):
        super().__init__()
        self.grid, self.cond_dim, self.cfg, self.residual = tuple(grid), cond_dim, cfg, residual
        width = cfg.width
        self.embed = declare(nn.Linear(state_dim, width), ADAMW)  # input embedding of the states
        if cond_dim > 0:
            # a hidden MLP (z from the IDM, or the action, to AdaLN's input), despite its name
            self.cond_embed = nn.Sequential(nn.Linear(cond_dim, width), nn.SiLU(), nn.Linear(width, width))
            declare(self.cond_embed, MUON, "0.weight", "2.weight")
        else:
            self.null_cond = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList(
            AdaLNZeroBlock(width, cfg.heads, cfg.mlp_ratio, backend=backend) for _ in range(cfg.depth)
        )
        self.final = FinalLayer(width, state_dim, backend=backend)
        nn.init.zeros_(self.final.unembed.weight)  # DiT: zero-initialised output layer
        nn.init.zeros_(self.final.unembed.bias)
        self.rope = Rope3D(width // cfg.heads, self.grid, rope_base)

    @property
    def frame_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def new_cache(self, max_frames: int | None = None) -> PredictorCache:
        return PredictorCache(len(self.blocks), max_frames)

    def _conditioning(self, cond: torch.Tensor | None, b: int, t: int, dtype) -> torch.Tensor:
        if self.cond_dim > 0:
            if cond is None or cond.shape[:2] != (b, t) or cond.shape[-1] != self.cond_dim:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond must be (B, T, {self.cond_dim}) = ({b}, {t}, {self.cond_dim}), got {got}")
            return self.cond_embed(cond.to(dtype))
        if cond is not None:
            raise ValueError("this predictor has no latent input (deterministic); pass cond=None")
        return self.null_cond.to(dtype).expand(b, t, -1)

    def forward(self, states: torch.Tensor, cond: torch.Tensor | None, cache: PredictorCache | None = None):
        if states.dim() != 4 or states.shape[2] != self.frame_tokens:
            raise ValueError(f"states must be (B, T, {self.frame_tokens}, C), got {tuple(states.shape)}")
        b, t, n, cs = states.shape
        x = self.embed(states.reshape(b, t * n, cs))
        c = self._conditioning(cond, b, t, x.dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, c, frame_tokens=n, rope=self.rope, cache=None if cache is None else cache.layers[i])
        out = self.final(x, c, frame_tokens=n).view(b, t, n, cs)
        return out + states if self.residual else out

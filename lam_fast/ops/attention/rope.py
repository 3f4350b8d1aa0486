"""3D rotary position embedding over (t, h, w) for frame-major token sequences."""

from __future__ import annotations

import torch


class Rope3D:
    """Rotary embedding of token positions (t, h, w), tokens laid out frame-major, raster order.

    The head dimension D is split in two halves (x1 = x[..., :D/2], x2 = x[..., D/2:]) and pair j
    is rotated by angle ``coord_axis(j) * inv_freq[j]``: pairs [0, P) follow t, [P, 2P) follow h,
    [2P, 3P) follow w with P = (D/2) // 3, and the remaining D/2 - 3P pairs are not rotated. Each axis
    uses frequencies ``base ** (-k / P)``, k < P (V-JEPA 2 style: one independent 1D RoPE per axis).
    A fused kernel can recompute every angle from the token index, so no table is required; the
    reference uses small cached tables.

    grid: (h, w) tokens per frame; head_dim: D (even, >= 6).
    """

    def __init__(self, head_dim: int, grid: tuple[int, int], base: float = 10000.0):
        if head_dim % 2 or head_dim < 6:
            raise ValueError(f"Rope3D needs an even head_dim >= 6, got {head_dim}")
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"Rope3D grid must be (h, w) with positive sizes, got {grid}")
        self.head_dim = head_dim
        self.grid = (int(grid[0]), int(grid[1]))
        self.base = float(base)
        self.pairs_per_axis = (head_dim // 2) // 3
        exponent = torch.arange(self.pairs_per_axis, dtype=torch.float64) / self.pairs_per_axis
        self.inv_freq = (self.base ** -exponent).to(torch.float32)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def frame_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def angles(self, frame_offset: int, num_frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Angles (num_frames * h * w, D/2) float32 for frames [frame_offset, frame_offset + num_frames)."""
        h, w = self.grid
        t = torch.arange(frame_offset, frame_offset + num_frames, dtype=torch.float32)
        tt = t.repeat_interleave(h * w)
        hh = torch.arange(h, dtype=torch.float32).repeat_interleave(w).repeat(num_frames)
        ww = torch.arange(w, dtype=torch.float32).repeat(h * num_frames)
        f = self.inv_freq
        rest = self.head_dim // 2 - 3 * self.pairs_per_axis
        ang = torch.cat(
            [tt[:, None] * f, hh[:, None] * f, ww[:, None] * f, torch.zeros(tt.numel(), rest)], dim=1
        )
        return ang.to(device)

    def cos_sin(self, frame_offset: int, num_frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (frame_offset, num_frames, str(device))
        if key not in self._tables:
            ang = self.angles(frame_offset, num_frames, device)
            self._tables[key] = (ang.cos(), ang.sin())
        return self._tables[key]

    def rotate(self, x: torch.Tensor, frame_offset: int = 0) -> torch.Tensor:
        """Rotate x: (..., L, D) whose L tokens are frames starting at ``frame_offset``."""
        length, dim = x.shape[-2], x.shape[-1]
        if dim != self.head_dim:
            raise ValueError(f"Rope3D built for head_dim {self.head_dim}, got {dim}")
        if length % self.frame_tokens:
            raise ValueError(f"sequence length {length} is not a multiple of {self.frame_tokens} tokens per frame")
        cos, sin = self.cos_sin(frame_offset, length // self.frame_tokens, x.device)
        x1, x2 = x.float().chunk(2, dim=-1)
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        return out.to(x.dtype)

    def __repr__(self) -> str:
        return f"Rope3D(head_dim={self.head_dim}, grid={self.grid}, base={self.base})"

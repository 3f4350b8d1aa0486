"""Reference vector-quantisation lookup (eager PyTorch, the oracle)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ROWS_PER_CHUNK = 4096


def nearest_code_reference(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """int64 (M,) index of the nearest code by L2; ties go to the lowest index.

    Distances ``|x|^2 - 2 x.c + |c|^2`` are evaluated in float64 in row chunks, so the oracle is
    exact for any input dtype up to float32 rounding and never holds more than a chunk of the
    M x K matrix.
    """
    xd, cd = x.detach().double(), codebook.detach().double()
    c_sq = (cd * cd).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], _ROWS_PER_CHUNK):
        rows = xd[start : start + _ROWS_PER_CHUNK]
        dist = (rows * rows).sum(1, keepdim=True) - 2 * rows @ cd.T + c_sq
        out[start : start + _ROWS_PER_CHUNK] = dist.argmin(1)  # argmin returns the first minimum
    return out


def vq_losses(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor):
    """Straight-through quantised vectors and the two VQ-VAE losses for given code indices."""
    codes = codebook[indices]
    quantized = x + (codes - x).detach()
    commitment = F.mse_loss(x, codes.detach())
    codebook_loss = F.mse_loss(codes, x.detach())
    return quantized, commitment, codebook_loss

"""Reference frame-wise AdaLN modulation and gated residual (eager PyTorch, the oracle)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_frame(t: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, T, 1, C) so it broadcasts over the N tokens of each frame."""
    return t.unsqueeze(2)


def adaln_modulate_reference(x, shift, scale, *, frame_tokens: int, eps: float):
    b, length, c = x.shape
    xf = x.view(b, length // frame_tokens, frame_tokens, c)
    normed = F.layer_norm(xf, (c,), eps=eps)
    return (normed * (1 + _per_frame(scale)) + _per_frame(shift)).reshape(b, length, c)


def gated_residual_reference(x, y, gate, *, frame_tokens: int):
    b, length, c = x.shape
    shape = (b, length // frame_tokens, frame_tokens, c)
    return (x.view(shape) + _per_frame(gate) * y.reshape(shape)).reshape(b, length, c)

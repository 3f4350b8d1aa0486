"""Fitting a :class:`~lam_fast.models.decoder.StateDecoder` (states -> pixels) with L1, on the one
small-model loop (:func:`lam_fast.training.fit.fit`); ``lam-fast train-decoder`` runs it."""

from __future__ import annotations

import torch

from lam_fast.models.decoder import StateDecoder
from lam_fast.training.fit import FitSettings, fit


def _as_float_frames(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()


def fit_decoder(decoder: StateDecoder, states: torch.Tensor, frames: torch.Tensor, *, steps: int,
                batch_size: int = 8, lr: float = 1e-3, weight_decay: float = 0.0, warmup_frac: float = 0.05,
                seed: int = 0, device: str | torch.device = "cpu") -> list[float]:
    """Train ``decoder`` with L1 to ``frames``; returns the per-step training losses.

    states: (M, T, N, C) float; frames: (M, T * frames_per_state, 3, H, W), uint8 in [0, 255] or
    float in [0, 1]. Both may live on the CPU: each step moves a batch of ``min(batch_size, M)``
    clips (drawn with replacement by a generator seeded with ``seed``) to ``device``. AdamW
    (betas 0.9, 0.95) with linear warm-up over ``warmup_frac`` of the steps, then cosine to 0.
    Leaves the decoder in eval mode.
    """
    if states.shape[0] != frames.shape[0] or states.shape[0] < 1:
        raise ValueError(f"states {tuple(states.shape)} and frames {tuple(frames.shape)} must share a non-empty dim 0")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    decoder.to(device)

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        target = _as_float_frames(frames[index]).to(device)
        return (decoder(states[index].to(device)) - target).abs().mean()

    settings = FitSettings(steps=steps, lr=lr, weight_decay=weight_decay, warmup_frac=warmup_frac,
                           betas=(0.9, 0.95), seed=seed)
    return fit(decoder, loss_of, population=states.shape[0], batch_size=min(batch_size, states.shape[0]),
               settings=settings)

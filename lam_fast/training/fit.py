"""The one fitting loop for the small modules fitted on top of a world model or its encoder: the
decoder (:mod:`lam_fast.training.decoder`), the controllers (:mod:`lam_fast.training.controller`)
and the action-conditioned baseline (:mod:`lam_fast.training.action_model`).

AdamW, a linear warm-up then cosine to 0 (:func:`~lam_fast.training.optim.warmup_cosine`), and
random mini-batches: each step draws ``batch_size`` row indices *with replacement* from a
generator seeded with ``seed``, and the caller's loss function turns them into a scalar loss. So
the random draws depend only on ``(seed, population, batch_size, steps)``: a run is reproduced
exactly by its settings. The large world-model training is :mod:`lam_fast.training.loop`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lam_fast.training.optim import warmup_cosine


@dataclass(frozen=True)
class FitSettings:
    """How :func:`fit` optimises.

    ``betas`` are AdamW's (PyTorch's default (0.9, 0.999)); ``grad_clip`` the max total gradient
    norm (None: no clipping); ``warmup_frac`` the fraction of ``steps`` of linear warm-up.
    """

    steps: int
    lr: float
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.lr <= 0 or not 0 <= self.warmup_frac < 1:
            raise ValueError(f"invalid fit settings (steps >= 1, lr > 0, warmup_frac in [0, 1)): {self}")


def fit(module: nn.Module, loss_of: Callable[[torch.Tensor], torch.Tensor], *, population: int, batch_size: int,
        settings: FitSettings) -> list[float]:
    """Minimise ``loss_of(index)`` over the parameters of ``module``; returns the loss of every step.

    ``index`` is a CPU int64 tensor of ``batch_size`` row numbers in ``[0, population)``, drawn
    with replacement; ``loss_of`` builds the batch from it and returns a scalar tensor. The module
    is in train mode during the loop and left in eval mode.
    """
    if population < 1 or batch_size < 1:
        raise ValueError(f"population and batch_size must be positive, got {population}, {batch_size}")
    optimizer = torch.optim.AdamW(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                  betas=settings.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.steps, settings.warmup_frac))
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    module.train()
    for _ in range(settings.steps):
        index = torch.randint(population, (batch_size,), generator=generator)
        loss = loss_of(index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    module.eval()
    return losses

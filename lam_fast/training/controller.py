"""Controller training (PAPER.md section 4): L2 to the IDM's latents, AdamW, warm-up + cosine."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lam_fast.training.optim import warmup_cosine


@dataclass(frozen=True)
class ControllerTraining:
    """PAPER.md section 4: 3000 iterations, AdamW lr 1e-3, wd 0.04, 300 warm-up steps, cosine, batch 256."""

    steps: int = 3000
    lr: float = 1e-3
    weight_decay: float = 0.04
    warmup_steps: int = 300
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or not 0 <= self.warmup_steps < self.steps or self.lr <= 0:
            raise ValueError(f"invalid controller training settings: {self}")


def train_controller(controller: nn.Module, actions: torch.Tensor, states: torch.Tensor | None,
                     targets: torch.Tensor, settings: ControllerTraining = ControllerTraining()) -> list[float]:
    """Fit ``controller(actions, states) ~ targets`` (the IDM's latents) with L2; returns the loss per step.

    actions: (M, A); states: (M, N, C) or None; targets: (M, Z). Batches are drawn with replacement
    from a generator seeded by ``settings.seed``.
    """
    m = actions.shape[0]
    if targets.shape[0] != m or (states is not None and states.shape[0] != m):
        raise ValueError(f"actions, states and targets must share the first dim, got {actions.shape[0]}, "
                         f"{None if states is None else states.shape[0]}, {targets.shape[0]}")
    opt = torch.optim.AdamW(controller.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(settings.steps, settings.warmup_steps / settings.steps))
    g = torch.Generator().manual_seed(settings.seed)
    losses = []
    controller.train()
    for _ in range(settings.steps):
        idx = torch.randint(m, (min(settings.batch_size, m),), generator=g).to(actions.device)
        pred = controller(actions[idx], None if states is None else states[idx])
        loss = (pred - targets[idx]).pow(2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    controller.eval()
    return losses

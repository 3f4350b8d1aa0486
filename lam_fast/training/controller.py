"""Controller training (PAPER.md section 4): L2 to the IDM's latents, on the one small-model loop
(:func:`lam_fast.training.fit.fit`: AdamW, warm-up + cosine, random mini-batches)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lam_fast.training.fit import FitSettings, fit


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


@torch.no_grad()
def controller_dataset(model, states: list[torch.Tensor], actions: list[torch.Tensor]):
    """(actions (M, A), s_t (M, N, C), IDM z_t (M, Z)) over every transition of the episodes: the
    controller's training pairs, a real action and the state it acts on -> the latent the world
    model's IDM infers for that transition."""
    a, s, z = [], [], []
    for st, ac in zip(states, actions):
        a.append(ac)
        s.append(st[:-1])
        z.append(model.infer_actions(st[None])[0])
    return torch.cat(a), torch.cat(s), torch.cat(z)


def train_controller(controller: nn.Module, actions: torch.Tensor, states: torch.Tensor | None,
                     targets: torch.Tensor, settings: ControllerTraining = ControllerTraining()) -> list[float]:
    """Fit ``controller(actions, states) ~ targets`` (the IDM's latents) with L2; returns the loss per step.

    actions: (M, A); states: (M, N, C) or None; targets: (M, Z). Batches of ``min(batch_size, M)``
    are drawn with replacement from a generator seeded by ``settings.seed``.
    """
    m = actions.shape[0]
    if targets.shape[0] != m or (states is not None and states.shape[0] != m):
        raise ValueError(f"actions, states and targets must share the first dim, got {actions.shape[0]}, "
                         f"{None if states is None else states.shape[0]}, {targets.shape[0]}")

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        idx = index.to(actions.device)
        pred = controller(actions[idx], None if states is None else states[idx])
        return (pred - targets[idx]).pow(2).sum(dim=1).mean()

    fit_settings = FitSettings(steps=settings.steps, lr=settings.lr, weight_decay=settings.weight_decay,
                               warmup_frac=settings.warmup_steps / settings.steps, seed=settings.seed)
    return fit(controller, loss_of, population=m, batch_size=min(settings.batch_size, m), settings=fit_settings)

"""Training the action-conditioned baseline (:class:`~lam_fast.models.ActionConditionedWorldModel`):
its teacher-forced L1 on random windows of action-labelled episodes, on the one small-model loop
(:func:`lam_fast.training.fit.fit`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lam_fast.training.fit import FitSettings, fit


@dataclass(frozen=True)
class ActionModelTraining:
    """AdamW (lr 6.25e-4, wd 0.04), 10% warm-up then cosine, gradient norm clipped at 1, batches of
    ``batch_size`` windows of ``num_frames`` states."""

    steps: int = 1000
    batch_size: int = 8
    num_frames: int = 8
    lr: float = 6.25e-4
    weight_decay: float = 0.04
    warmup_frac: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.num_frames < 2 or self.lr <= 0 or not 0 <= self.warmup_frac < 1:
            raise ValueError(f"invalid action-model training settings: {self}")


def train_action_model(model, states: list[torch.Tensor], actions: list[torch.Tensor],
                       settings: ActionModelTraining = ActionModelTraining()) -> list[float]:
    """Teacher-forced L1 on random windows of ``num_frames`` states (fewer if an episode is
    shorter); every window start of every episode is equally likely. Returns the loss per step.

    states: per episode (T_e, N, C); actions: per episode (T_e - 1, A), normalised to [-1, 1].
    """
    frames = min(settings.num_frames, min(s.shape[0] for s in states))
    if frames < 2:
        raise ValueError("episodes must have at least 2 states")
    windows = [(e, t) for e, s in enumerate(states) for t in range(s.shape[0] - frames + 1)]

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        pick = [windows[i] for i in index.tolist()]
        s = torch.stack([states[e][t : t + frames] for e, t in pick])
        a = torch.stack([actions[e][t : t + frames - 1] for e, t in pick])
        return model(s, a)["loss"]

    fit_settings = FitSettings(steps=settings.steps, lr=settings.lr, weight_decay=settings.weight_decay,
                               warmup_frac=settings.warmup_frac, grad_clip=settings.grad_clip, seed=settings.seed)
    return fit(model, loss_of, population=len(windows), batch_size=settings.batch_size, settings=fit_settings)

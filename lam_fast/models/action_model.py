"""The action-conditioned baseline world model (V-JEPA 2-AC / NWM style): the same frame-causal
predictor as the latent-action model, with frame-wise AdaLN-zero conditioned on the real action
a_t (normalised to [-1, 1]) instead of a latent z_t. Trained with the same teacher-forced L1 loss on
action-labelled video; it is the "trained with action labels" row of the planning tables.

Training: ``lam_fast.training.action_model.train_action_model``."""

from __future__ import annotations

import torch
from torch import nn

from lam_fast.models.config import ModelConfig
from lam_fast.models.predictor import Predictor


class ActionConditionedWorldModel(nn.Module):
    """states: (B, T, N, C); actions: (B, T-1, A) with action t taking s_t to s_{t+1}."""

    def __init__(self, cfg: ModelConfig, *, state_dim: int, grid: tuple[int, int], action_dim: int):
        super().__init__()
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self.cfg, self.state_dim, self.grid, self.action_dim = cfg, state_dim, tuple(grid), action_dim
        self.predictor = Predictor(state_dim, self.grid, action_dim, cfg.predictor, rope_base=cfg.rope_base,
                                   residual=cfg.residual, backend=cfg.backend)

    def _check(self, states: torch.Tensor, actions: torch.Tensor) -> None:
        n = self.grid[0] * self.grid[1]
        if states.dim() != 4 or states.shape[2:] != (n, self.state_dim) or states.shape[1] < 2:
            raise ValueError(f"states must be (B, T>=2, {n}, {self.state_dim}), got {tuple(states.shape)}")
        if actions.shape != (states.shape[0], states.shape[1] - 1, self.action_dim):
            raise ValueError(f"actions must be (B, T-1, {self.action_dim}) = "
                             f"{(states.shape[0], states.shape[1] - 1, self.action_dim)}, got {tuple(actions.shape)}")

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"loss": L1 of the teacher-forced one-step predictions, "pred/rel_to_copy": diagnostic}."""
        self._check(states, actions)
        pred = self.predictor(states[:, :-1], actions)
        target = states[:, 1:].float()
        loss = (pred.float() - target).abs().mean()
        with torch.no_grad():
            copy = (states[:, :-1].float() - target).abs().mean()
        return {"loss": loss, "pred_l1": loss.detach(), "pred/rel_to_copy": loss.detach() / copy.clamp_min(1e-12)}

    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """One-step predictions (B, T, N, C): output t predicts s_{t+1} from s_{0..t} and a_{0..t}."""
        return self.predictor(states, actions)

"""LatentActionWorldModel: IDM + latent regulariser + frame-causal predictor, on encoder states."""

from __future__ import annotations

import torch
from torch import nn

from lam_fast.models.config import ModelConfig
from lam_fast.models.idm import InverseDynamicsModel
from lam_fast.models.predictor import Predictor
from lam_fast.models.regularizers import build_regularizer


class LatentActionWorldModel(nn.Module):
    """The trainable part of the system (the frozen encoder lives outside, see ``models.encoders``).

    states: (B, T, N, C) encoder states s_0..s_{T-1} with N = grid[0] * grid[1] tokens per state.
    Training loss per step t: ``|| s_{t+1} - p(s_{0:t}, z_t) ||_1 + L_z(z_t)`` with z_t = g(s_t, s_{t+1}),
    all t at once with teacher forcing.
    """

    def __init__(self, cfg: ModelConfig, *, state_dim: int, grid: tuple[int, int]):
        super().__init__()
        self.cfg, self.state_dim, self.grid = cfg, state_dim, tuple(grid)
        self.regularizer = build_regularizer(cfg)  # None: the deterministic baseline, no latent at all
        num_tokens = grid[0] * grid[1]
        if self.has_latent:
            self.idm = InverseDynamicsModel(state_dim, num_tokens, self.regularizer.idm_out_dim, cfg.idm)
        cond_dim = cfg.latent_dim if self.has_latent else 0
        self.predictor = Predictor(state_dim, self.grid, cond_dim, cfg.predictor, rope_base=cfg.rope_base,
                                   residual=cfg.residual, backend=cfg.backend)

    @property
    def has_latent(self) -> bool:
        """False only for ``deterministic`` (no IDM, no regulariser: a learned constant conditions the
        predictor); an ``unconstrained`` latent is a latent, passed through without a regulariser."""
        return self.regularizer is not None

    def _check(self, states: torch.Tensor, min_frames: int) -> None:
        n = self.grid[0] * self.grid[1]
        if states.dim() != 4 or states.shape[2] != n or states.shape[3] != self.state_dim or states.shape[1] < min_frames:
            raise ValueError(
                f"states must be (B, T>={min_frames}, {n}, {self.state_dim}), got {tuple(states.shape)}"
            )

    def _idm(self, states: torch.Tensor) -> torch.Tensor:
        b, t, n, c = states.shape
        pairs = (states[:, :-1].reshape(-1, n, c), states[:, 1:].reshape(-1, n, c))
        return self.idm(*pairs)  # (B*(T-1), out_dim)

    def forward(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher-forced losses: {"loss": total, "pred_l1": ..., "reg/...": weighted terms, metrics...}.

        Every entry is a scalar tensor; only "pred_l1" and "reg/*" enter "loss".
        """
        self._check(states, 2)
        b, t = states.shape[:2]
        out: dict[str, torch.Tensor] = {}
        z = None
        if self.has_latent:
            reg = self.regularizer(self._idm(states))
            z = reg.z.view(b, t - 1, -1)
            out.update(reg.losses)
            out.update(reg.metrics)
        pred = self.predictor(states[:, :-1], z)
        target = states[:, 1:].float()
        out["pred_l1"] = (pred.float() - target).abs().mean()
        with torch.no_grad():  # scale-free diagnostic: error relative to predicting "no change"
            copy_l1 = (states[:, :-1].float() - target).abs().mean()
            out["pred/rel_to_copy"] = out["pred_l1"].detach() / copy_l1.clamp_min(1e-12)
        loss_terms = [v for k, v in out.items() if k == "pred_l1" or k.startswith("reg/")]
        out["loss"] = torch.stack(loss_terms).sum()
        return out

    @torch.no_grad()
    def infer_actions(self, states: torch.Tensor) -> torch.Tensor:
        """Deterministic latent actions (B, T-1, latent_dim): z_t = g(s_t, s_{t+1}) through the regulariser
        (the mean for noisy, the nearest code for discrete)."""
        if not self.has_latent:
            raise ValueError("the deterministic baseline has no latent actions")
        self._check(states, 2)
        b, t = states.shape[:2]
        return self.regularizer.infer(self._idm(states)).view(b, t - 1, -1)

    def predict(self, states: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """One-step predictions (B, T, N, C): output t predicts s_{t+1} from s_{0..t} and z_{0..t}."""
        return self.predictor(states, z)

    @torch.no_grad()
    def rollout(self, context: torch.Tensor, z: torch.Tensor | None = None, *, horizon: int | None = None,
                use_cache: bool = True) -> torch.Tensor:
        """Autoregressive prediction of future states.

        context: (B, T0, N, C) observed states. z: (B, T0 - 1 + H, latent_dim), the latents of the
        T0 - 1 observed transitions followed by the H steps to imagine (None for the deterministic
        baseline, which then needs ``horizon``). Returns (B, H, N, C) predicted states
        s_hat_{T0}..s_hat_{T0+H-1}. With ``use_cache`` each step feeds only the newest frame through
        the predictor, attending to cached keys/values; without it every step recomputes the prefix
        (same result, for testing and comparison).
        """
        self._check(context, 1)
        t0 = context.shape[1]
        if z is None:
            if self.has_latent or horizon is None:
                raise ValueError("pass z (B, T0-1+H, D), or horizon for the deterministic baseline")
        else:
            if z.dim() != 3 or z.shape[0] != context.shape[0] or z.shape[1] < t0:
                raise ValueError(f"z must be (B, T0-1+H, D) with H >= 1 for T0={t0}, got {tuple(z.shape)}")
            horizon = z.shape[1] - t0 + 1

        def cond(start: int, stop: int):
            return None if z is None else z[:, start:stop]

        frames = [context]
        if use_cache:
            cache = self.predictor.new_cache(max_frames=t0 + horizon - 1)
            nxt = self.predictor(context, cond(0, t0), cache)[:, -1:]
            preds = [nxt]
            for step in range(1, horizon):
                nxt = self.predictor(nxt, cond(t0 + step - 1, t0 + step), cache)
                preds.append(nxt)
            return torch.cat(preds, dim=1)
        preds = []
        for step in range(horizon):
            seq = torch.cat(frames, dim=1)
            nxt = self.predictor(seq, cond(0, seq.shape[1]))[:, -1:]
            preds.append(nxt)
            frames.append(nxt)
        return torch.cat(preds, dim=1)

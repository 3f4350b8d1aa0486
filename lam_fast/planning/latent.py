"""Planning in latent-action space with the world model: candidates are latent action sequences
z_{T0-1..T0+H-2}, rolled out from observed states, scored by the distance of the last imagined
state to a goal state (PAPER.md section 4: cost ||s_goal - s_hat_{t+H}||_2).

The rollout shares work across the S candidates of a problem: the observed prefix (frames
0..T0-2, conditioned on their inferred latents) is run through the predictor once per plan into a
KV cache, which every candidate continuation then copies (``PredictorCache.repeat_batch``); each
step feeds one new frame per candidate against the cache. ``use_cache=False`` recomputes every
prefix at every step (same result; the baseline of ``perf/bench_planning.py``).
"""

from __future__ import annotations

import torch

from lam_fast.models.world_model import LatentActionWorldModel
from lam_fast.planning.optimizers import CEMConfig, MPPIConfig, PlanResult, cem, mppi


class LatentRollout:
    """Imagined end states for batches of latent action sequences from one observed context.

    context: (B, T0, N, C) observed states; z_observed: (B, T0 - 1, Z) the latents of the observed
    transitions (``model.infer_actions(context)``; may be empty when T0 = 1).
    """

    def __init__(self, model: LatentActionWorldModel, context: torch.Tensor, z_observed: torch.Tensor,
                 *, use_cache: bool = True):
        if model.regularizer is None:
            raise ValueError("the deterministic baseline has no latent actions to plan over")
        if context.dim() != 4 or z_observed.dim() != 3 or z_observed.shape[:2] != (context.shape[0], context.shape[1] - 1):
            raise ValueError(
                f"context must be (B, T0, N, C) and z_observed (B, T0-1, Z); got {tuple(context.shape)} "
                f"and {tuple(z_observed.shape)}"
            )
        self.model, self.context, self.z_observed, self.use_cache = model, context, z_observed, use_cache
        self.prefix = None
        if use_cache:
            self.prefix = model.predictor.new_cache()
            if context.shape[1] > 1:
                with torch.no_grad():
                    model.predictor(context[:, :-1], z_observed, self.prefix)

    @torch.no_grad()
    def end_states(self, candidates: torch.Tensor) -> torch.Tensor:
        """candidates: (B, S, H, Z) -> imagined s_hat_{T0-1+H}: (B, S, N, C)."""
        b, s, h, zd = candidates.shape
        flat = candidates.reshape(b * s, h, zd).to(self.z_observed.dtype)
        if not self.use_cache:
            context = self.context.repeat_interleave(s, dim=0)
            z = torch.cat([self.z_observed.repeat_interleave(s, dim=0), flat], dim=1)
            out = self.model.rollout(context, z, use_cache=False)[:, -1]
            return out.view(b, s, *out.shape[1:])
        cache = self.prefix.repeat_batch(s)
        x = self.context[:, -1:].repeat_interleave(s, dim=0)
        for step in range(h):
            x = self.model.predictor(x, flat[:, step : step + 1], cache)
        return x[:, 0].view(b, s, *x.shape[2:])


def plan_latents(
    model: LatentActionWorldModel,
    context: torch.Tensor,
    goal: torch.Tensor,
    *,
    method: str = "cem",
    config: CEMConfig | MPPIConfig | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Latent action sequences (B, H, Z) that drive the world model from ``context`` (B, T0, N, C)
    to ``goal`` (B, N, C), by CEM or MPPI on the L2 distance of the last imagined state."""
    if goal.shape != (context.shape[0], *context.shape[2:]):
        raise ValueError(f"goal must be (B, N, C) = {(context.shape[0], *context.shape[2:])}, got {tuple(goal.shape)}")
    z_observed = (model.infer_actions(context) if context.shape[1] > 1
                  else context.new_zeros(context.shape[0], 0, model.cfg.latent_dim))
    rollout = LatentRollout(model, context, z_observed, use_cache=use_cache)

    def cost(candidates):
        end = rollout.end_states(candidates).float()
        return (end - goal[:, None].float()).flatten(2).norm(dim=2)

    kwargs = dict(batch=context.shape[0], action_dim=model.cfg.latent_dim, generator=generator, device=context.device)
    if method == "cem":
        return cem(cost, config=config or CEMConfig(), **kwargs)
    if method == "mppi":
        return mppi(cost, config=config or MPPIConfig(), **kwargs)
    raise ValueError(f"method must be 'cem' or 'mppi', got {method!r}")

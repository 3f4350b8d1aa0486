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
    """Imagined end states for batches of candidate sequences from one observed context.

    context: (B, T0, N, C) observed states; z_observed: (B, T0 - 1, Z) the conditioning of the
    observed transitions (``model.infer_actions(context)`` for a latent-action model, the real
    normalised actions for an action-conditioned one; may be empty when T0 = 1).

    Candidates are the predictor's conditioning itself, or, with ``controller``, real actions that
    the controller maps to latents step by step on the imagined states (PAPER.md section 4:
    ``s_hat_{i+1} = p(s_hat_{0:i}, c(a_i, s_hat_i))``). ``hold`` > 1 repeats each candidate step
    that many world-model steps (the navigation protocol's single straight-line action split over
    the horizon is ``H = 1, hold = 8``).
    """

    def __init__(self, model, context: torch.Tensor, z_observed: torch.Tensor, *, use_cache: bool = True,
                 controller=None, hold: int = 1):
        predictor = model.predictor
        if predictor.cond_dim == 0:
            raise ValueError("the deterministic baseline has no latent or action input to plan over")
        if context.dim() != 4 or z_observed.dim() != 3 or z_observed.shape[:2] != (context.shape[0], context.shape[1] - 1):
            raise ValueError(
                f"context must be (B, T0, N, C) and z_observed (B, T0-1, Z); got {tuple(context.shape)} "
                f"and {tuple(z_observed.shape)}"
            )
        if hold < 1:
            raise ValueError(f"hold must be >= 1, got {hold}")
        self.model, self.predictor, self.context, self.z_observed = model, predictor, context, z_observed
        self.use_cache, self.controller, self.hold = use_cache, controller, hold
        self.prefix = None
        if use_cache:
            self.prefix = predictor.new_cache()
            if context.shape[1] > 1:
                with torch.no_grad():
                    predictor(context[:, :-1], z_observed, self.prefix)

    def _cond(self, step: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One step's conditioning (M, Z) from a candidate step (M, A) and the state it acts on (M, N, C)."""
        cond = step if self.controller is None else self.controller(step, state)
        return cond.to(self.z_observed.dtype)

    @torch.no_grad()
    def end_states(self, candidates: torch.Tensor) -> torch.Tensor:
        """candidates: (B, S, H, A) -> imagined s_hat_{T0-1+H*hold}: (B, S, N, C)."""
        b, s, h, a = candidates.shape
        flat = candidates.reshape(b * s, h, a)
        x = self.context[:, -1:].repeat_interleave(s, dim=0)
        if self.use_cache:
            cache = self.prefix.repeat_batch(s)
        else:
            frames = [self.context.repeat_interleave(s, dim=0)]
            conds = [self.z_observed.repeat_interleave(s, dim=0)]
        for step in range(h * self.hold):
            cond = self._cond(flat[:, step // self.hold], x[:, 0])[:, None]
            if self.use_cache:
                x = self.predictor(x, cond, cache)
            else:  # recompute the whole prefix every step (the baseline of perf/bench_planning.py)
                conds.append(cond)
                x = self.predictor(torch.cat(frames, dim=1), torch.cat(conds, dim=1))[:, -1:]
                frames.append(x)
        return x[:, 0].view(b, s, *x.shape[2:])


def _check_goal(context: torch.Tensor, goal: torch.Tensor) -> None:
    if goal.shape != (context.shape[0], *context.shape[2:]):
        raise ValueError(f"goal must be (B, N, C) = {(context.shape[0], *context.shape[2:])}, got {tuple(goal.shape)}")


def _optimise(rollout: LatentRollout, goal: torch.Tensor, action_dim: int, *, method: str,
              config: CEMConfig | MPPIConfig | None, generator: torch.Generator | None,
              bound: float | None = None) -> PlanResult:
    """CEM or MPPI on the L2 distance of the rollout's last imagined state to ``goal``; candidates
    are clamped to [-bound, bound] before the rollout when ``bound`` is given."""
    if method not in ("cem", "mppi"):
        raise ValueError(f"method must be 'cem' or 'mppi', got {method!r}")

    def cost(candidates):
        if bound is not None:
            candidates = candidates.clamp(-bound, bound)
        end = rollout.end_states(candidates).float()
        return (end - goal[:, None].float()).flatten(2).norm(dim=2)

    kwargs = dict(batch=goal.shape[0], action_dim=action_dim, generator=generator, device=goal.device)
    if method == "cem":
        return cem(cost, config=config or CEMConfig(), **kwargs)
    return mppi(cost, config=config or MPPIConfig(), **kwargs)


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
    _check_goal(context, goal)
    z_observed = (model.infer_actions(context) if context.shape[1] > 1
                  else context.new_zeros(context.shape[0], 0, model.cfg.latent_dim))
    rollout = LatentRollout(model, context, z_observed, use_cache=use_cache)
    return _optimise(rollout, goal, model.cfg.latent_dim, method=method, config=config, generator=generator)


def plan_actions(
    model,
    context: torch.Tensor,
    goal: torch.Tensor,
    *,
    action_dim: int,
    cond_observed: torch.Tensor | None = None,
    controller=None,
    hold: int = 1,
    method: str = "cem",
    config: CEMConfig | MPPIConfig | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Real-action sequences (B, H, A), normalised to [-1, 1], that drive a world model from
    ``context`` (B, T0, N, C) to ``goal`` (B, N, C).

    Two ways to drive the predictor: a latent-action model through ``controller`` (actions ->
    latents on the imagined states), or an action-conditioned model directly (``controller=None``,
    the predictor's conditioning is the action). Candidates are sampled unconstrained (CEM/MPPI
    start from N(0, I), as in the paper) and clamped to [-1, 1] before the rollout; the returned
    ``best``/``mean`` are clamped the same way. ``cond_observed`` (B, T0 - 1, Z): the conditioning
    of the observed transitions (default: none, T0 must be 1).
    """
    _check_goal(context, goal)
    if cond_observed is None:
        if context.shape[1] != 1:
            raise ValueError("pass cond_observed (B, T0-1, Z) for a context of more than one state")
        cond_observed = context.new_zeros(context.shape[0], 0, model.predictor.cond_dim)
    rollout = LatentRollout(model, context, cond_observed, use_cache=use_cache, controller=controller, hold=hold)
    result = _optimise(rollout, goal, action_dim, method=method, config=config, generator=generator, bound=1.0)
    result.best, result.mean = result.best.clamp(-1.0, 1.0), result.mean.clamp(-1.0, 1.0)
    return result

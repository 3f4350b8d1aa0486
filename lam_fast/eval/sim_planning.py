"""The sim protocols of PAPER.md section 4 on the action-labelled MuJoCo tasks (:mod:`lam_fast.envs`):
how well a controller and the action-conditioned baseline predict, and how well each policy plans.

Data split: the last ``heldout`` fraction of a dataset's episodes (at least one) is held out
(:func:`split_episodes`); the controller and the action-conditioned baseline train on the rest
(:mod:`lam_fast.training.controller`, :mod:`lam_fast.training.action_model`), and every reported
error and planning metric is measured on the held-out episodes only.

Actions are normalised to [-1, 1] with the task's bounds
(:func:`~lam_fast.envs.normalise_actions`) before they reach a controller or an action-conditioned
predictor; planners sample in that space (N(0, I) at start, as in the paper, clamped to the
bounds).

Planning protocols (offline, as the paper's evaluations: the planner sees the start state s_t and
the goal state s_{t+K} of a held-out episode; its plan is compared with the actions that really
took the robot there):

- ``reacher`` (DROID protocol): CEM 300 samples / 10 elites / 15 iterations, H = 3, cost
  ``||s_goal - s_hat_{t+H}||_2``. Metrics: ``delta_actions`` = L1 between the summed planned and the
  summed true actions (:func:`~lam_fast.eval.metrics.delta_action_l1`; the paper's Δxyz, here on
  joint-angle deltas, so in radians) and ``end_effector_error`` = distance between the fingertip
  reached by the summed planned joint deltas (wrist clipped to its range after every step, as the
  simulator does) and the true one (metres, forward kinematics of the arm).
- ``nav`` (RECON / NWM protocol): CEM 120 samples, 1 iteration, one (forward, yaw) action held over
  H = 8 steps (a single straight-line action split over the steps). Metrics: ATE and RPE (metres)
  between the planned trajectory (the action integrated by the unicycle kinematics) and the true
  positions.

Policies: ``latent`` (latent-action world model driven through a controller), ``action`` (the
action-conditioned baseline), ``random`` (uniform actions in the bounds, with the same
parametrisation as the planner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lam_fast.envs import (
    denormalise_actions,
    integrate_nav,
    normalise_actions,
    reacher_end_effector,
    reacher_wrist_range,
)
from lam_fast.eval.metrics import ate, delta_action_l1, rpe
from lam_fast.planning import CEMConfig, MPPIConfig
from lam_fast.planning.latent import plan_actions

#: Per-task planning defaults (PAPER.md section 4).
PLAN_DEFAULTS = {
    "reacher": dict(method="cem", samples=300, elites=10, iterations=15, horizon=3, hold=1),
    "nav": dict(method="cem", samples=120, elites=10, iterations=1, horizon=1, hold=8),
}


# ----------------------------------------------------------------------------- data


def split_episodes(episodes: list, heldout: float = 0.25) -> tuple[list, list]:
    """(train, held-out): the last ``ceil(heldout * n)`` episodes (at least 1) are held out."""
    if len(episodes) < 2:
        raise ValueError(f"need at least 2 episodes to hold some out, got {len(episodes)}")
    if not 0 < heldout < 1:
        raise ValueError(f"heldout must be in (0, 1), got {heldout}")
    n_held = min(len(episodes) - 1, max(1, math.ceil(heldout * len(episodes))))
    return episodes[:-n_held], episodes[-n_held:]


@torch.no_grad()
def encode_episode(encoder, frames, device="cpu") -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> states (T, N, C). Frames are resized to the encoder's size and
    duplicated ``frames_per_state`` times, so one real action maps to one latent step (PAPER.md
    section 4: "frames are duplicated")."""
    video = torch.as_tensor(frames).to(device).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    if video.shape[-1] != encoder.image_size or video.shape[-2] != encoder.image_size:
        video = F.interpolate(video, size=(encoder.image_size, encoder.image_size), mode="bilinear",
                              antialias=True, align_corners=False).clamp(0, 1)
    video = video.repeat_interleave(encoder.frames_per_state, dim=0)
    return encoder.encode(video[None])[0]


def encode_episodes(encoder, episodes: list, info, device="cpu") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(states per episode (T, N, C), actions per episode (T - 1, A) normalised to [-1, 1]), on ``device``."""
    states = [encode_episode(encoder, ep.frames, device) for ep in episodes]
    actions = [normalise_actions(ep.actions, info).to(device) for ep in episodes]
    return states, actions


def _windows(length: int, span: int) -> list[int]:
    """Start indices of non-overlapping windows of ``span`` transitions in an episode of ``length`` states."""
    return list(range(0, length - span, span))


# ----------------------------------------------------------------------------- controller


@torch.no_grad()
def controlled_rollout(model, context: torch.Tensor, actions: torch.Tensor, controller) -> torch.Tensor:
    """context (B, 1, N, C), actions (B, H, A) -> imagined states (B, H, N, C) with
    ``s_hat_{i+1} = p(s_hat_{0:i}, c(a_i, s_hat_i))`` (KV-cached, one frame per step): the explicit
    loop the planners' batched rollouts are checked against."""
    cache = model.predictor.new_cache(max_frames=actions.shape[1])
    x, out = context, []
    for i in range(actions.shape[1]):
        z = controller(actions[:, i], x[:, 0])
        x = model.predictor(x, z[:, None], cache)
        out.append(x)
    return torch.cat(out, dim=1)


@torch.no_grad()
def controller_rollout_errors(model, controller, states: list[torch.Tensor], actions: list[torch.Tensor],
                              steps: int) -> dict:
    """Mean L1 (state space) of ``steps``-step rollouts from each window start of the held-out
    episodes: with the IDM's latents (inferred from the real next states), with the controller's
    latents (from the real actions, on the imagined states) and for "no change" (copying s_t)."""
    idm, ctrl, copy = [], [], []
    for st, ac in zip(states, actions):
        starts = _windows(st.shape[0], steps)
        if not starts:
            raise ValueError(f"episodes of {st.shape[0]} states are too short for {steps}-step rollouts")
        real = torch.stack([st[t : t + steps + 1] for t in starts])  # (W, steps + 1, N, C)
        act = torch.stack([ac[t : t + steps] for t in starts])
        z = model.infer_actions(real)
        target = real[:, 1:]
        idm.append((model.rollout(real[:, :1], z) - target).abs().flatten(1).mean(1))
        ctrl.append((controlled_rollout(model, real[:, :1], act, controller) - target).abs().flatten(1).mean(1))
        copy.append((real[:, :1] - target).abs().flatten(1).mean(1))
    idm, ctrl, copy = torch.cat(idm), torch.cat(ctrl), torch.cat(copy)
    return {"rollout_error_idm": idm.mean().item(), "rollout_error_controller": ctrl.mean().item(),
            "ratio": (ctrl.mean() / idm.mean()).item(), "rollout_error_copy": copy.mean().item(),
            "rollout_steps": steps, "windows": int(idm.numel())}


@torch.no_grad()
def controller_latent_fit(controller, actions: torch.Tensor, states: torch.Tensor | None,
                          targets: torch.Tensor) -> dict:
    """How well the controller's latents match the IDM's on held-out transitions: mean squared L2
    error, the targets' variance (mean squared distance to their mean) and R² = 1 - error / variance."""
    pred = controller(actions, states)
    latent_l2 = (pred - targets).pow(2).sum(1).mean().item()
    latent_var = (targets - targets.mean(0)).pow(2).sum(1).mean().item()
    return {"heldout_latent_l2": latent_l2, "heldout_latent_variance": latent_var,
            "heldout_r2": 1.0 - latent_l2 / max(latent_var, 1e-12)}


# ----------------------------------------------------------------------------- action-conditioned baseline


@torch.no_grad()
def one_step_error(model, states: list[torch.Tensor], actions: list[torch.Tensor]) -> dict:
    """Held-out one-step L1 of an action-conditioned model, and of copying s_t."""
    err, copy = [], []
    for st, ac in zip(states, actions):
        pred = model.predict(st[None, :-1], ac[None])[0]
        err.append((pred - st[1:]).abs().mean())
        copy.append((st[:-1] - st[1:]).abs().mean())
    err, copy = torch.stack(err).mean().item(), torch.stack(copy).mean().item()
    return {"one_step_error": err, "one_step_error_copy": copy, "rel_to_copy": err / max(copy, 1e-12)}


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlanSettings:
    method: str = "cem"
    samples: int = 300
    elites: int = 10
    iterations: int = 15
    horizon: int = 3  # planned action steps
    hold: int = 1  # world-model steps per planned action
    problems: int = 64
    batch: int = 8
    temperature: float = 1.0  # MPPI
    seed: int = 0

    def __post_init__(self):
        if self.method not in ("cem", "mppi"):
            raise ValueError(f"method must be 'cem' or 'mppi', got {self.method!r}")
        if min(self.samples, self.iterations, self.horizon, self.hold, self.problems, self.batch) < 1:
            raise ValueError(f"samples, iterations, horizon, hold, problems and batch must be >= 1: {self}")
        if not 1 <= self.elites <= self.samples:
            raise ValueError(f"elites must be in [1, samples={self.samples}], got {self.elites}")

    @property
    def span(self) -> int:
        """World-model steps from the start state to the goal state."""
        return self.horizon * self.hold

    def optimizer_config(self):
        if self.method == "cem":
            return CEMConfig(samples=self.samples, elites=self.elites, iterations=self.iterations, horizon=self.horizon)
        return MPPIConfig(samples=self.samples, iterations=self.iterations, horizon=self.horizon,
                          temperature=self.temperature)


def planning_problems(episodes: list, span: int, limit: int) -> list[tuple[int, int]]:
    """(episode, start) pairs: window starts every ``span`` steps, episodes interleaved, at most ``limit``."""
    per_episode = [_windows(ep.frames.shape[0], span) for ep in episodes]
    if not any(per_episode):
        raise ValueError(f"episodes are too short to plan {span} steps ahead")
    problems, k = [], 0
    while len(problems) < limit and any(k < len(w) for w in per_episode):
        problems += [(e, w[k]) for e, w in enumerate(per_episode) if k < len(w)]
        k += 1
    return problems[:limit]


def _reacher_metrics(planned: torch.Tensor, true_actions: torch.Tensor, true_poses: torch.Tensor) -> dict:
    d = delta_action_l1(planned, true_actions)
    q_end = true_poses[:, 0, 2:4].clone()
    wrist = reacher_wrist_range()
    for step in range(planned.shape[1]):  # the simulator clips the wrist to its range after every step
        q_end = q_end + planned[:, step]
        if wrist is not None:
            q_end[:, 1] = q_end[:, 1].clamp(*wrist)
    ee = (reacher_end_effector(q_end) - true_poses[:, -1, :2]).norm(dim=-1)
    return {"delta_actions": d.mean().item(), "end_effector_error": ee.mean().item(),
            "per_problem": {"delta_actions": d.tolist(), "end_effector_error": ee.tolist()},
            "units": {"delta_actions": "rad (joint-angle deltas)", "end_effector_error": "m"}}


def _nav_metrics(planned: torch.Tensor, true_poses: torch.Tensor) -> dict:
    traj = integrate_nav(true_poses[:, 0], planned)  # (P, span + 1, 3)
    a, r = ate(traj[..., :2], true_poses[..., :2]), rpe(traj[..., :2], true_poses[..., :2])
    return {"ate": a.mean().item(), "rpe": r.mean().item(), "per_problem": {"ate": a.tolist(), "rpe": r.tolist()},
            "units": {"ate": "m", "rpe": "m"}}


def plan_metrics(task: str, info, episodes: list, problems: list[tuple[int, int]], planned: torch.Tensor) -> dict:
    """Task metrics of real-action plans ``planned`` (P, span, A) against the recorded episodes."""
    if task not in ("reacher", "nav"):
        raise ValueError(f"unknown task {task!r}")
    span = planned.shape[1]
    true_actions = torch.stack([torch.as_tensor(episodes[e].actions[t : t + span]) for e, t in problems]).float()
    true_poses = torch.stack([torch.as_tensor(episodes[e].poses[t : t + span + 1]) for e, t in problems]).float()
    if task == "reacher":
        return _reacher_metrics(planned, true_actions, true_poses)
    return _nav_metrics(planned, true_poses)


def _check_policy(policy: str, model, encoder, controller) -> None:
    if policy not in ("latent", "action", "random"):
        raise ValueError(f"policy must be latent, action or random, got {policy!r}")
    if policy == "latent" and controller is None:
        raise ValueError("the latent policy needs a controller (lam-fast train-controller)")
    if policy != "random" and (model is None or encoder is None):
        raise ValueError(f"the {policy} policy needs a model and its encoder")


def plan(policy: str, task: str, info, episodes: list, settings: PlanSettings, *, model=None, encoder=None,
         controller=None, device="cpu", use_cache: bool = True) -> dict:
    """Plan every problem of the held-out ``episodes`` with ``policy`` and return the metrics.

    policy "latent": ``model`` is a LatentActionWorldModel and ``controller`` maps actions to its
    latents; "action": ``model`` is an ActionConditionedWorldModel; "random": no model.
    """
    _check_policy(policy, model, encoder, controller)
    problems = planning_problems(episodes, settings.span, settings.problems)
    a_dim = len(info.action_names)
    g = torch.Generator(device=device).manual_seed(settings.seed)
    plans, costs = [], []
    state_cache: dict[int, torch.Tensor] = {}
    for lo in range(0, len(problems), settings.batch):
        chunk = problems[lo : lo + settings.batch]
        if policy == "random":
            u = torch.rand((len(chunk), settings.horizon, a_dim), generator=g, device=device) * 2 - 1
        else:
            for e, _ in chunk:
                if e not in state_cache:
                    state_cache[e] = encode_episode(encoder, episodes[e].frames, device)
            context = torch.stack([state_cache[e][t : t + 1] for e, t in chunk])
            goal = torch.stack([state_cache[e][t + settings.span] for e, t in chunk])
            result = plan_actions(model, context, goal, action_dim=a_dim, hold=settings.hold,
                                  controller=controller if policy == "latent" else None, method=settings.method,
                                  config=settings.optimizer_config(), use_cache=use_cache, generator=g)
            u = result.best
            costs.append(result.best_cost)
        plans.append(u.repeat_interleave(settings.hold, dim=1))  # (B, H, A) planned -> (B, H * hold, A) executed
    planned = denormalise_actions(torch.cat(plans).cpu(), info)
    out = {"task": task, "policy": policy, "method": settings.method if policy != "random" else "uniform",
           "episodes": len({e for e, _ in problems}), "problems": len(problems), "samples": settings.samples,
           "elites": settings.elites, "iterations": settings.iterations, "horizon": settings.horizon,
           "hold": settings.hold, "seed": settings.seed}
    out.update(plan_metrics(task, info, episodes, problems, planned))
    if costs:
        out["final_cost"] = torch.cat(costs).mean().item()
    out["planned_actions"] = planned.tolist()
    return out

"""Controllers, the action-conditioned baseline and planning on the action-labelled MuJoCo tasks
(``lam_fast.data.sim``), following PAPER.md section 4.

Data split: the last ``heldout`` fraction of a dataset's episodes (at least one) is held out; the
controller and the action-conditioned baseline train on the rest, and every reported error and
planning metric is measured on the held-out episodes only.

Actions are normalised to [-1, 1] with the task's bounds (``normalise_actions``) before they reach a
controller or an action-conditioned predictor; planners sample in that space (N(0, I) at start, as
in the paper, clamped to the bounds).

Planning protocols (offline, as the paper's evaluations: the planner sees the start state s_t and
the goal state s_{t+K} of a held-out episode; its plan is compared with the actions that really
took the robot there):

- ``reacher`` (DROID protocol): CEM 300 samples / 10 elites / 15 iterations, H = 3, cost
  ``||s_goal - s_hat_{t+H}||_2``. Metrics: ``delta_actions`` = L1 between the summed planned and the
  summed true actions (the paper's Δxyz; here joint-angle deltas, radians) and
  ``end_effector_error`` = distance between the fingertip reached by the summed planned joint
  deltas and the true one (metres, forward kinematics of the arm).
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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lam_fast.io import load_weights_with_meta, save_weights_with_meta

#: The reacher's wrist joint range (+-160 degrees, dm_control's reacher.xml), applied like the simulator.
REACHER_WRIST_LIMIT = math.radians(160.0)

#: Per-task planning defaults (PAPER.md section 4).
PLAN_DEFAULTS = {
    "reacher": dict(method="cem", samples=300, elites=10, iterations=15, horizon=3, hold=1),
    "nav": dict(method="cem", samples=120, elites=10, iterations=1, horizon=1, hold=8),
}


# ----------------------------------------------------------------------------- data

def _bounds(info) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(info.action_low, dtype=torch.float32), torch.tensor(info.action_high, dtype=torch.float32)


def normalise_actions(actions, info) -> torch.Tensor:
    """Real actions (..., A) -> [-1, 1] with the task's bounds."""
    low, high = _bounds(info)
    a = torch.as_tensor(actions, dtype=torch.float32)
    return 2.0 * (a - low.to(a.device)) / (high - low).to(a.device) - 1.0


def denormalise_actions(u: torch.Tensor, info) -> torch.Tensor:
    """[-1, 1] (..., A) -> real actions."""
    low, high = _bounds(info)
    return low.to(u.device) + (u.float().clamp(-1.0, 1.0) + 1.0) * 0.5 * (high - low).to(u.device)


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


# ----------------------------------------------------------------------------- save / load

def save_module(directory: str | Path, name: str, module: nn.Module, meta: dict) -> Path:
    """``DIR/NAME.safetensors`` then ``DIR/NAME.json`` (the JSON last: a crash mid-save leaves the
    previous pair loadable, or nothing that looks complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights_with_meta(directory / f"{name}.safetensors", directory / f"{name}.json", module.state_dict(), meta)
    return directory


def _load_pair(directory: str | Path, name: str) -> tuple[dict, dict]:
    directory = Path(directory)
    meta_path, weights = directory / f"{name}.json", directory / f"{name}.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"no {name} in {directory} (expected {meta_path.name} and {weights.name})")
    tensors, meta = load_weights_with_meta(weights, meta_path)
    return meta, tensors


def build_controller(meta: dict) -> nn.Module:
    from lam_fast.models.controller import CrossAttentionController, MLPController

    if meta["kind"] == "mlp":
        return MLPController(meta["action_dim"], meta["latent_dim"], hidden=meta.get("width", 256))
    if meta["kind"] == "cross":
        return CrossAttentionController(meta["action_dim"], meta["state_dim"], meta["num_tokens"], meta["latent_dim"],
                                        width=meta["width"], heads=meta["heads"])
    raise ValueError(f"unknown controller kind {meta['kind']!r} (mlp or cross)")


def load_controller(directory: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    meta, state = _load_pair(directory, "controller")
    controller = build_controller(meta)
    controller.load_state_dict(state)
    return controller.to(device).eval(), meta


def load_action_model(directory: str | Path, device="cpu"):
    """(ActionConditionedWorldModel, frozen encoder, meta) from ``lam-fast train-action-model --out DIR``."""
    from lam_fast.models import ActionConditionedWorldModel, ModelConfig
    from lam_fast.models.encoders import build_encoder

    meta, state = _load_pair(directory, "action_model")
    encoder = build_encoder(meta["encoder"], meta["image_size"], **meta["encoder_options"]).to(device)
    cfg = ModelConfig(reg="deterministic", preset=meta["preset"], residual=meta["residual"])
    model = ActionConditionedWorldModel(cfg, state_dim=encoder.dim, grid=encoder.grid, action_dim=meta["action_dim"])
    model.load_state_dict(state)
    return model.to(device).eval(), encoder, meta


# ----------------------------------------------------------------------------- controller

@torch.no_grad()
def controller_dataset(model, states: list[torch.Tensor], actions: list[torch.Tensor]):
    """(actions (M, A), s_t (M, N, C), IDM z_t (M, Z)) over every transition of the episodes."""
    a, s, z = [], [], []
    for st, ac in zip(states, actions):
        a.append(ac)
        s.append(st[:-1])
        z.append(model.infer_actions(st[None])[0])
    return torch.cat(a), torch.cat(s), torch.cat(z)


@torch.no_grad()
def controlled_rollout(model, context: torch.Tensor, actions: torch.Tensor, controller) -> torch.Tensor:
    """context (B, 1, N, C), actions (B, H, A) -> imagined states (B, H, N, C) with
    ``s_hat_{i+1} = p(s_hat_{0:i}, c(a_i, s_hat_i))`` (KV-cached, one frame per step)."""
    cache = model.predictor.new_cache(max_frames=actions.shape[1])
    x, out = context, []
    for i in range(actions.shape[1]):
        z = controller(actions[:, i], x[:, 0])
        x = model.predictor(x, z[:, None], cache)
        out.append(x)
    return torch.cat(out, dim=1)


def _windows(length: int, span: int) -> list[int]:
    """Start indices of non-overlapping windows of ``span`` transitions in an episode of ``length`` states."""
    return list(range(0, length - span, span))


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


# ----------------------------------------------------------------------------- action-conditioned baseline

@dataclass(frozen=True)
class ActionModelTraining:
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
    """Teacher-forced L1 on random windows of ``num_frames`` states (AdamW, warm-up + cosine)."""
    from lam_fast.training.optim import warmup_cosine

    frames = min(settings.num_frames, min(s.shape[0] for s in states))
    if frames < 2:
        raise ValueError("episodes must have at least 2 states")
    windows = [(e, t) for e, s in enumerate(states) for t in range(s.shape[0] - frames + 1)]
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(settings.steps, settings.warmup_frac))
    g = torch.Generator().manual_seed(settings.seed)
    losses = []
    model.train()
    for _ in range(settings.steps):
        pick = torch.randint(len(windows), (settings.batch_size,), generator=g).tolist()
        s = torch.stack([states[windows[i][0]][windows[i][1] : windows[i][1] + frames] for i in pick])
        a = torch.stack([actions[windows[i][0]][windows[i][1] : windows[i][1] + frames - 1] for i in pick])
        out = model(s, a)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        opt.step()
        sched.step()
        losses.append(out["loss"].item())
    model.eval()
    return losses


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
        from lam_fast.planning import CEMConfig, MPPIConfig

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


def _expand_plan(u: torch.Tensor, hold: int) -> torch.Tensor:
    """(B, H, A) planned steps -> (B, H * hold, A) executed actions."""
    return u.repeat_interleave(hold, dim=1)


def plan_metrics(task: str, info, episodes: list, problems: list[tuple[int, int]], planned: torch.Tensor) -> dict:
    """Task metrics of real-action plans ``planned`` (P, span, A) against the recorded episodes."""
    from lam_fast.data import sim
    from lam_fast.eval.metrics import ate, delta_xyz, rpe

    span = planned.shape[1]
    true_actions = torch.stack([torch.as_tensor(episodes[e].actions[t : t + span]) for e, t in problems]).float()
    true_poses = torch.stack([torch.as_tensor(episodes[e].poses[t : t + span + 1]) for e, t in problems]).float()
    if task == "reacher":
        d = delta_xyz(planned, true_actions)
        q_end = true_poses[:, 0, 2:4].clone()
        for step in range(span):  # the simulator clips the wrist to its range after every step
            q_end = q_end + planned[:, step]
            q_end[:, 1] = q_end[:, 1].clamp(-REACHER_WRIST_LIMIT, REACHER_WRIST_LIMIT)
        ee = (sim.reacher_end_effector(q_end) - true_poses[:, -1, :2]).norm(dim=-1)
        return {"delta_actions": d.mean().item(), "end_effector_error": ee.mean().item(),
                "per_problem": {"delta_actions": d.tolist(), "end_effector_error": ee.tolist()},
                "units": {"delta_actions": "rad (joint-angle deltas)", "end_effector_error": "m"}}
    if task == "nav":
        traj = sim.integrate_nav(true_poses[:, 0], planned)  # (P, span + 1, 3)
        a, r = ate(traj[..., :2], true_poses[..., :2]), rpe(traj[..., :2], true_poses[..., :2])
        return {"ate": a.mean().item(), "rpe": r.mean().item(), "per_problem": {"ate": a.tolist(), "rpe": r.tolist()},
                "units": {"ate": "m", "rpe": "m"}}
    raise ValueError(f"unknown task {task!r}")


def plan(policy: str, task: str, info, episodes: list, settings: PlanSettings, *, model=None, encoder=None,
         controller=None, device="cpu", use_cache: bool = True) -> dict:
    """Plan every problem of the held-out ``episodes`` with ``policy`` and return the metrics.

    policy "latent": ``model`` is a LatentActionWorldModel and ``controller`` maps actions to its
    latents; "action": ``model`` is an ActionConditionedWorldModel; "random": no model.
    """
    from lam_fast.planning.latent import plan_actions

    if policy not in ("latent", "action", "random"):
        raise ValueError(f"policy must be latent, action or random, got {policy!r}")
    if policy == "latent" and controller is None:
        raise ValueError("the latent policy needs a controller (lam-fast train-controller)")
    if policy != "random" and (model is None or encoder is None):
        raise ValueError(f"the {policy} policy needs a model and its encoder")
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
        plans.append(_expand_plan(u, settings.hold))
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

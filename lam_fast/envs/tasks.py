"""What each simulated task is: its action and pose spaces, the episode record, action normalisation.

Needs no MuJoCo: planners, controllers and the sim planning protocols use these names on data
already rendered. The tasks themselves (models, kinematics, policies) are in
:mod:`lam_fast.envs.reacher` and :mod:`lam_fast.envs.nav`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SIM_TASKS = ("reacher", "nav")
#: AR(1) coefficient of both tasks' random policies (``a_t = AR a_{t-1} + noise``): smooth actions,
#: correlated from step to step as in teleoperated or driven video
AR = 0.7


@dataclass(frozen=True)
class SimTaskInfo:
    """What a task's actions and poses are (see :mod:`lam_fast.envs`)."""

    name: str
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    pose_names: tuple[str, ...]
    description: str


TASK_INFO: dict[str, SimTaskInfo] = {
    "reacher": SimTaskInfo(
        name="reacher",
        action_names=("d_shoulder", "d_wrist"),
        action_low=(-0.3, -0.3),
        action_high=(0.3, 0.3),
        pose_names=("finger_x", "finger_y", "q0", "q1"),
        description="dm_control two-link reacher arm seen top-down by a fixed camera; actions are "
                    "joint-angle deltas (rad/step) applied kinematically; poses are the fingertip "
                    "xy (m) and the joint angles (rad); the target sphere is fixed per episode",
    ),
    "nav": SimTaskInfo(
        name="nav",
        action_names=("forward", "yaw"),
        action_low=(0.0, -0.4),
        action_high=(0.3, 0.4),
        pose_names=("x", "y", "yaw"),
        description="egocentric camera (0.4 m high, fovy 90) in an 8x8 m arena with coloured walls "
                    "and 12 obstacles fixed per dataset; actions are (forward m/step, yaw rad/step) "
                    "with unicycle kinematics; poses are (x m, y m, yaw rad)",
    ),
}


@dataclass
class SimEpisode:
    """One rendered episode: action ``t`` takes ``frames[t]`` to ``frames[t + 1]``."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    actions: np.ndarray  # (T-1, A) float32, executed actions
    poses: np.ndarray  # (T, P) float32
    task: str
    seed: int


def validate_task(task: str) -> SimTaskInfo:
    """The :class:`SimTaskInfo` of ``task``; ValueError naming the known tasks otherwise."""
    if task not in TASK_INFO:
        raise ValueError(f"task must be one of {SIM_TASKS}, got {task!r}")
    return TASK_INFO[task]


def validate_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (bools and floats refused); ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------ action normalisation
# Controllers, action-conditioned predictors and planners see actions in [-1, 1] (planners sample
# N(0, I) there, as in the paper); the task's bounds map them to real actions and back.


def action_bounds(info: SimTaskInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` float32 tensors of the task's action bounds."""
    return torch.tensor(info.action_low, dtype=torch.float32), torch.tensor(info.action_high, dtype=torch.float32)


def normalise_actions(actions, info: SimTaskInfo) -> torch.Tensor:
    """Real actions (..., A) -> [-1, 1] with the task's bounds."""
    low, high = action_bounds(info)
    a = torch.as_tensor(actions, dtype=torch.float32)
    return 2.0 * (a - low.to(a.device)) / (high - low).to(a.device) - 1.0


def denormalise_actions(u: torch.Tensor, info: SimTaskInfo) -> torch.Tensor:
    """[-1, 1] (..., A) -> real actions (clamped to the bounds first)."""
    low, high = action_bounds(info)
    return low.to(u.device) + (u.float().clamp(-1.0, 1.0) + 1.0) * 0.5 * (high - low).to(u.device)

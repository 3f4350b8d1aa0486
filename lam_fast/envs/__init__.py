"""Action-labelled video from MuJoCo: two tasks, every episode deterministic by its seed.

The paper's world models learn from unlabelled video; to *measure* what their latent actions
capture (and to plan with them) we need video whose true actions and poses are known. This package
renders such video with MuJoCo (``mujoco==3.17.0``; the reacher model comes from
``dm_control==1.0.50``) and writes it as files (:mod:`lam_fast.envs.episodes`).

Conventions shared by both tasks: an episode of ``T`` frames has ``T - 1`` actions, action ``t``
takes frame ``t`` to frame ``t + 1``; the motion is applied *kinematically* (no dynamics, no
momentum), so the state after an action depends only on the state before and the action. The
recorded action is always the **executed** one (after clipping to bounds, joint limits or
collisions), so replaying the recorded actions reproduces the episode. Random policies are smooth
(AR(1): ``a_t = 0.7 a_{t-1} + noise``, clipped), so consecutive actions are correlated as in
teleoperated or driven video.

One module per job:

- :mod:`~lam_fast.envs.tasks`: action and pose spaces (:data:`TASK_INFO`), :class:`SimEpisode`,
  action normalisation to [-1, 1]; no MuJoCo needed.
- :mod:`~lam_fast.envs.reacher`: the arm seen by a fixed camera (model, joint range, forward
  kinematics, policy).
- :mod:`~lam_fast.envs.nav`: egocentric navigation (arena, unicycle kinematics, policy).
- :mod:`~lam_fast.envs.render`: MuJoCo import with an offscreen ``MUJOCO_GL`` (chosen right before
  the first ``import mujoco``, not when this package is imported), cached renderers,
  :class:`RenderUnavailable`.
- :mod:`~lam_fast.envs.simulate`: :func:`render_episode`.
- :mod:`~lam_fast.envs.episodes`: :func:`generate` / :func:`load_episodes` (mp4 + npz + meta.json).

Importing this package imports neither MuJoCo nor dm_control.
"""

from lam_fast.envs.episodes import episode_seed, generate, load_episodes
from lam_fast.envs.nav import ARENA_HALF, NAV_CAMERA_HEIGHT, NAV_CLEARANCE, integrate_nav
from lam_fast.envs.reacher import reacher_end_effector, reacher_wrist_range
from lam_fast.envs.render import RenderUnavailable
from lam_fast.envs.simulate import render_episode
from lam_fast.envs.tasks import (
    SIM_TASKS,
    TASK_INFO,
    SimEpisode,
    SimTaskInfo,
    action_bounds,
    denormalise_actions,
    normalise_actions,
)

__all__ = [
    "ARENA_HALF",
    "NAV_CAMERA_HEIGHT",
    "NAV_CLEARANCE",
    "SIM_TASKS",
    "TASK_INFO",
    "RenderUnavailable",
    "SimEpisode",
    "SimTaskInfo",
    "action_bounds",
    "denormalise_actions",
    "episode_seed",
    "generate",
    "integrate_nav",
    "load_episodes",
    "normalise_actions",
    "reacher_end_effector",
    "reacher_wrist_range",
    "render_episode",
]

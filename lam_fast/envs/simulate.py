"""One episode of a task: its policy (or given actions) through its kinematics and renderer."""

from __future__ import annotations

import numpy as np

from lam_fast.envs.nav import NavSim, build_nav
from lam_fast.envs.reacher import ReacherSim, build_reacher
from lam_fast.envs.render import cached_scene
from lam_fast.envs.tasks import SimEpisode, validate_int, validate_task


def _simulator(task: str, image_size: int, scene_seed: int, rng: np.random.Generator):
    if task == "reacher":
        return ReacherSim(cached_scene(("reacher",), build_reacher, image_size), rng)
    scene = cached_scene(("nav", scene_seed), lambda mujoco: build_nav(mujoco, scene_seed), image_size)
    return NavSim(scene, scene_seed, rng)


def render_episode(task: str, *, seed: int, frames: int, image_size: int = 64, scene_seed: int = 0,
                   actions: np.ndarray | None = None) -> SimEpisode:
    """Render one episode of ``task`` (see :mod:`lam_fast.envs`): same arguments, same episode.

    Args:
        task: ``"reacher"`` or ``"nav"``.
        seed: episode seed (>= 0): start pose, target (reacher) and the random policy.
        frames: T, frames to render (>= 2).
        image_size: square image side in pixels (>= 8).
        scene_seed: nav obstacle layout (ignored by reacher).
        actions: optional ``(T - 1, A)`` actions to replay instead of the random policy (clipped
            to the bounds; nav blocks the forward part at obstacles); the start pose still comes
            from ``seed``. The episode records the executed actions.

    Returns:
        A :class:`~lam_fast.envs.SimEpisode` (frames uint8 (T, S, S, 3), actions float32 (T-1, A),
        poses float32 (T, P)).

    Raises:
        RenderUnavailable: no MuJoCo or no offscreen OpenGL backend here.
    """
    info = validate_task(task)
    seed = validate_int("seed", seed, 0)
    frames = validate_int("frames", frames, 2)
    image_size = validate_int("image_size", image_size, 8)
    scene_seed = validate_int("scene_seed", scene_seed, 0)
    if actions is not None:
        actions = np.asarray(actions, np.float64)
        if actions.shape != (frames - 1, len(info.action_names)):
            raise ValueError(f"actions must have shape (frames - 1, {len(info.action_names)}) = "
                             f"({frames - 1}, {len(info.action_names)}), got {actions.shape}")
    sim = _simulator(task, image_size, scene_seed, np.random.default_rng(seed))
    images = np.empty((frames, image_size, image_size, 3), np.uint8)
    executed = np.empty((frames - 1, len(info.action_names)), np.float32)
    poses = np.empty((frames, len(info.pose_names)), np.float32)
    poses[0] = sim.render(images[0])
    for t in range(frames - 1):
        proposed = sim.propose() if actions is None else actions[t]
        if task == "nav":
            executed[t] = sim.execute(proposed, turn_when_blocked=actions is None)
        else:
            executed[t] = sim.execute(proposed)
        poses[t + 1] = sim.render(images[t + 1])
    return SimEpisode(frames=images, actions=executed, poses=poses, task=task, seed=seed)

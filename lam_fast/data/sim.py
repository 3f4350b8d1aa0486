"""Former home of the MuJoCo tasks, which are a simulator, not data: they live in ``lam_fast.envs``
(tasks, reacher, nav, render, simulate, episodes) and their command line in ``lam_fast.cli.sim``.
The old names answer here with a DeprecationWarning; importing this module no longer sets
``MUJOCO_GL`` (``lam_fast.envs.render.import_mujoco`` does, when MuJoCo is first needed)."""

from lam_fast._moved import moved

__getattr__ = moved(__name__, {
    "SIM_TASKS": "lam_fast.envs.tasks",
    "SimTaskInfo": "lam_fast.envs.tasks",
    "SimEpisode": "lam_fast.envs.tasks",
    "ARENA_HALF": "lam_fast.envs.nav",
    "NAV_CLEARANCE": "lam_fast.envs.nav",
    "NAV_CAMERA_HEIGHT": "lam_fast.envs.nav",
    "integrate_nav": "lam_fast.envs.nav",
    "reacher_end_effector": "lam_fast.envs.reacher",
    "render_episode": "lam_fast.envs.simulate",
    "episode_seed": "lam_fast.envs.episodes",
    "generate": "lam_fast.envs.episodes",
    "load_episodes": "lam_fast.envs.episodes",
})

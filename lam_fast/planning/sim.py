"""Former home of the sim planning protocol, the controllers' files and the action-conditioned
baseline's training. Fitting moved down to ``lam_fast.training`` (``fitted``, ``action_model``,
``controller``), the task's action bounds to ``lam_fast.envs.tasks`` and the protocol itself up to
``lam_fast.eval.sim_planning``: this layer holds optimisers and rollouts only. The old names answer
here with a DeprecationWarning (``REACHER_WRIST_LIMIT`` is gone: the limit is read from the
reacher's model file, ``lam_fast.envs``)."""

from lam_fast._moved import moved

__getattr__ = moved(__name__, {
    "PLAN_DEFAULTS": "lam_fast.eval.sim_planning",
    "PlanSettings": "lam_fast.eval.sim_planning",
    "plan": "lam_fast.eval.sim_planning",
    "plan_metrics": "lam_fast.eval.sim_planning",
    "planning_problems": "lam_fast.eval.sim_planning",
    "split_episodes": "lam_fast.eval.sim_planning",
    "encode_episode": "lam_fast.eval.sim_planning",
    "controlled_rollout": "lam_fast.eval.sim_planning",
    "controller_rollout_errors": "lam_fast.eval.sim_planning",
    "one_step_error": "lam_fast.eval.sim_planning",
    "normalise_actions": "lam_fast.envs.tasks",
    "denormalise_actions": "lam_fast.envs.tasks",
    "save_module": "lam_fast.training.fitted",
    "build_controller": "lam_fast.training.fitted",
    "load_controller": "lam_fast.training.fitted",
    "load_action_model": "lam_fast.training.fitted",
    "ActionModelTraining": "lam_fast.training.action_model",
    "train_action_model": "lam_fast.training.action_model",
    "controller_dataset": "lam_fast.training.controller",
})

"""The sim-task commands end to end on a tiny MuJoCo dataset: train-controller, train-action-model
and plan (latent, action, random), and the planning metrics on the true actions."""

import importlib.util
import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason="mujoco not installed")


@pytest.fixture(scope="module")
def sim_runs(tmp_path_factory):
    from lam_fast import envs
    from lam_fast.cli import main

    root = tmp_path_factory.mktemp("simcmd")
    try:
        for task in ("reacher", "nav"):
            envs.generate(task, root / task, episodes=4, frames=10, seed=0, image_size=32)
    except envs.RenderUnavailable as error:  # no MuJoCo offscreen renderer on this machine
        pytest.skip(str(error))
    assert main(["train", "--reg", "sparse", "--preset", "tiny", "--data", str(root / "reacher"), "--steps", "2",
                 "--batch-size", "2", "--image-size", "32", "--num-frames", "4", "--fps", "4", "--out",
                 str(root / "run"), "--engine", "local", "--num-workers", "0", "--save-every", "2"]) == 0
    return root


def test_controller_action_model_and_plans(sim_runs):
    from lam_fast.cli import main

    root = sim_runs
    run, data = root / "run", root / "reacher"
    assert main(["train-controller", "--ckpt", str(run), "--data", str(data), "--out", str(run / "controller"),
                 "--json", str(run / "eval" / "controller.json"), "--steps", "5", "--warmup", "1",
                 "--batch-size", "16", "--rollout-steps", "2"]) == 0
    ctrl = json.loads((run / "eval" / "controller.json").read_text())
    for key in ("rollout_error_idm", "rollout_error_controller", "ratio", "kind"):
        assert key in ctrl
    assert ctrl["episodes_heldout"] == 1 and ctrl["kind"] == "cross"
    assert (run / "controller" / "controller.safetensors").is_file()
    assert main(["train-action-model", "--data", str(data), "--out", str(root / "ac"), "--like", str(run),
                 "--steps", "3", "--num-frames", "4"]) == 0
    assert json.loads((root / "ac" / "eval" / "action_model.json").read_text())["one_step_error"] > 0
    small = ["--samples", "8", "--elites", "2", "--iterations", "2", "--problems", "3", "--batch", "2"]
    results = {}
    for policy, ckpt in [("latent", run), ("action", root / "ac"), ("random", None)]:
        out = run / "eval" / f"plan_{policy}.json"
        args = ["plan", "--data", str(data), "--json", str(out), "--policy", policy, *small]
        args += ["--ckpt", str(ckpt)] if ckpt else []
        args += ["--controller", str(run / "controller")] if policy == "latent" else []
        assert main(args) == 0
        results[policy] = json.loads(out.read_text())
    for policy, r in results.items():
        assert r["task"] == "reacher" and r["policy"] == policy and r["problems"] == 3
        assert r["delta_actions"] >= 0 and r["end_effector_error"] >= 0
        planned = np.array(r["planned_actions"])
        assert planned.shape == (3, 3, 2) and np.abs(planned).max() <= 0.3 + 1e-6  # in the task's bounds
    with pytest.raises(SystemExit):  # the latent policy without a controller is refused by name
        main(["plan", "--data", str(data), "--json", str(root / "x.json"), "--policy", "latent", "--ckpt", str(run)])


@pytest.mark.parametrize("task", ["reacher", "nav"])
def test_metrics_are_zero_for_the_true_actions(sim_runs, task):
    from lam_fast.envs import load_episodes
    from lam_fast.eval.sim_planning import PLAN_DEFAULTS, plan_metrics, planning_problems

    info, _, episodes = load_episodes(sim_runs / task)
    d = PLAN_DEFAULTS[task]
    span = d["horizon"] * d["hold"]
    problems = planning_problems(episodes, span, 8)
    true = torch.stack([torch.as_tensor(episodes[e].actions[t : t + span]) for e, t in problems])
    exact = plan_metrics(task, info, episodes, problems, true)
    wrong = plan_metrics(task, info, episodes, problems, true.flip(-1))
    keys = ("delta_actions", "end_effector_error") if task == "reacher" else ("ate", "rpe")
    for key in keys:
        assert exact[key] == pytest.approx(0.0, abs=1e-4), key
        assert wrong[key] > 10 * max(exact[key], 1e-5), key


def test_nav_plans_use_the_straight_line_protocol(sim_runs):
    from lam_fast.cli import main

    out = sim_runs / "nav_random.json"
    assert main(["plan", "--data", str(sim_runs / "nav"), "--json", str(out), "--policy", "random"]) == 0
    r = json.loads(out.read_text())
    planned = np.array(r["planned_actions"])
    assert r["hold"] == 8 and r["horizon"] == 1 and planned.shape[1] == 8
    assert (planned == planned[:, :1]).all()  # one action held over the horizon
    assert r["ate"] > 0 and r["rpe"] > 0


def test_action_model_encoder_options_are_strict(sim_runs, tmp_path, capsys):
    """--patch-size is a pixels option: refused with effnet (it used to be ignored silently) and
    with --like (the run's encoder is used); without it the pixels encoder keeps patch size 8."""
    from lam_fast.cli import main
    from lam_fast.training.fitted import load_action_model

    data = str(sim_runs / "nav")
    with pytest.raises(SystemExit):
        main(["train-action-model", "--data", data, "--out", str(tmp_path / "e"), "--encoder", "effnet",
              "--patch-size", "4", "--steps", "1"])
    assert "'patch_size' does not apply to encoder 'effnet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-action-model", "--data", data, "--out", str(tmp_path / "l"), "--like", str(sim_runs / "run"),
              "--patch-size", "8", "--steps", "1"])
    assert "--like" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not (tmp_path / "l").exists()
    assert main(["train-action-model", "--data", data, "--out", str(tmp_path / "p"), "--steps", "1",
                 "--num-frames", "3"]) == 0
    _, encoder, meta = load_action_model(tmp_path / "p")
    assert encoder.patch_size == 8 and meta["encoder"] == "pixels" and meta["encoder_options"] == {"patch_size": 8}

"""The sim protocols (lam_fast.eval.sim_planning): controlled rollouts, the action-conditioned
baseline, action planning, the split and the problems, on tiny hand-built models and data; the
sim-task commands end to end are in test_sim_commands.py."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lam_fast.models import ActionConditionedWorldModel, CrossAttentionController, LatentActionWorldModel, ModelConfig
from lam_fast.planning import CEMConfig
from lam_fast.planning.latent import LatentRollout, plan_actions
from lam_fast.eval.sim_planning import (
    PlanSettings,
    controlled_rollout,
    controller_latent_fit,
    one_step_error,
    planning_problems,
    split_episodes,
)
from lam_fast.training.action_model import ActionModelTraining, train_action_model
from lam_fast.training.fitted import load_controller, save_module

GRID, DIM, LATENT, ACT = (2, 2), 6, 4, 2


def _perturb(model, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the AdaLN-zero init, where the prediction ignores the conditioning
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def _latent_model(seed=0):
    torch.manual_seed(seed)
    return _perturb(LatentActionWorldModel(ModelConfig(reg="sparse", latent_dim=LATENT), state_dim=DIM, grid=GRID), seed)


def _action_model(seed=0, perturb=True):
    torch.manual_seed(seed)
    model = ActionConditionedWorldModel(ModelConfig(reg="deterministic"), state_dim=DIM, grid=GRID, action_dim=ACT)
    return _perturb(model, seed) if perturb else model


def _controller(seed=0):
    torch.manual_seed(seed)
    return _perturb(CrossAttentionController(ACT, DIM, GRID[0] * GRID[1], LATENT, width=16, heads=2), seed + 1)


def _states(b, t, seed=1):
    return torch.randn(b, t, GRID[0] * GRID[1], DIM, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hold", [1, 2])
def test_controlled_rollout_cached_equals_recomputed_and_the_explicit_loop(hold):
    model, controller = _latent_model(), _controller()
    context = _states(2, 1)
    candidates = torch.rand(2, 3, 2, ACT, generator=torch.Generator().manual_seed(4)) * 2 - 1
    empty = torch.zeros(2, 0, LATENT)
    cached = LatentRollout(model, context, empty, controller=controller, hold=hold).end_states(candidates)
    recomputed = LatentRollout(model, context, empty, controller=controller, hold=hold, use_cache=False).end_states(candidates)
    torch.testing.assert_close(cached, recomputed, rtol=1e-5, atol=1e-5)
    for b, s in [(0, 0), (1, 2)]:
        actions = candidates[b, s].repeat_interleave(hold, dim=0)[None]
        explicit = controlled_rollout(model, context[b : b + 1], actions, controller)[0, -1]
        torch.testing.assert_close(explicit, cached[b, s], rtol=1e-5, atol=1e-5)


def test_action_model_at_init_predicts_no_change_and_rejects_bad_shapes():
    model = _action_model(perturb=False)
    states = _states(2, 4)
    torch.testing.assert_close(model.predict(states, torch.randn(2, 4, ACT)), states)
    with pytest.raises(ValueError, match="actions must be"):
        model(states, torch.randn(2, 4, ACT))
    with pytest.raises(ValueError, match="no latent or action input"):
        LatentRollout(LatentActionWorldModel(ModelConfig(reg="deterministic"), state_dim=DIM, grid=GRID),
                      states[:, :1], torch.zeros(2, 0, 0))


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_action_planning_reaches_a_goal_the_model_can_reach(method):
    """The goal is the action model's own end state under hidden actions in the bounds: the plan
    must end at most half as far from it as doing nothing (u = 0), and its cost is what it says."""
    model = _action_model()
    context = _states(3, 1)
    hidden = torch.rand(3, 1, 2, ACT, generator=torch.Generator().manual_seed(5)) * 2 - 1
    empty = torch.zeros(3, 0, ACT)
    rollout = LatentRollout(model, context, empty)
    goal = rollout.end_states(hidden)[:, 0]
    config = CEMConfig(samples=100, elites=10, iterations=8, horizon=2) if method == "cem" else None
    from lam_fast.planning import MPPIConfig

    config = config or MPPIConfig(samples=100, iterations=8, horizon=2, noise_std=0.5, temperature=0.05)
    result = plan_actions(model, context, goal, action_dim=ACT, method=method, config=config,
                          generator=torch.Generator().manual_seed(0))
    assert result.best.abs().max() <= 1.0
    reached = (rollout.end_states(result.best[:, None])[:, 0] - goal).flatten(1).norm(dim=1)
    still = (rollout.end_states(torch.zeros(3, 1, 2, ACT))[:, 0] - goal).flatten(1).norm(dim=1)
    torch.testing.assert_close(reached, result.best_cost, rtol=1e-4, atol=1e-4)
    assert (reached < 0.5 * still).all(), (reached, still)


def test_split_and_problems():
    eps = [SimpleNamespace(frames=np.zeros((t, 1, 1, 3))) for t in (10, 10, 7, 10)]
    train, held = split_episodes(eps, 0.25)
    assert train == eps[:3] and held == eps[3:]
    with pytest.raises(ValueError, match="at least 2"):
        split_episodes(eps[:1])
    problems = planning_problems(eps, span=3, limit=100)
    assert problems[:4] == [(0, 0), (1, 0), (2, 0), (3, 0)]  # episodes interleaved
    assert all(t + 3 < eps[e].frames.shape[0] for e, t in problems)
    assert len(problems) == 3 + 3 + 2 + 3
    assert planning_problems(eps, span=3, limit=5) == problems[:5]
    with pytest.raises(ValueError, match="too short"):
        planning_problems(eps, span=20, limit=4)


def test_action_model_learns_action_dependent_dynamics():
    """States move by an action-dependent offset from a shared start: the trained model beats
    copying on held-out action sequences, which it can only do by reading the action."""
    g = torch.Generator().manual_seed(0)
    direction = 0.3 * torch.randn(ACT, GRID[0] * GRID[1] * DIM, generator=g)
    s0 = torch.randn(1, GRID[0] * GRID[1], DIM, generator=g)
    states, actions = [], []
    for _ in range(12):
        a = torch.rand(9, ACT, generator=g) * 2 - 1
        steps = (a @ direction).view(9, GRID[0] * GRID[1], DIM)
        states.append(torch.cat([s0, s0 + steps.cumsum(0)]))
        actions.append(a)
    model = _action_model(perturb=False)
    settings = ActionModelTraining(steps=100, batch_size=4, num_frames=4, lr=3e-3)
    losses = train_action_model(model, states[:10], actions[:10], settings)
    assert losses[-1] < 0.5 * losses[0]
    assert one_step_error(model, states[10:], actions[10:])["rel_to_copy"] < 0.6


def test_controller_save_load_round_trip(tmp_path):
    controller = _controller()
    meta = {"kind": "cross", "action_dim": ACT, "state_dim": DIM, "num_tokens": 4, "latent_dim": LATENT,
            "width": 16, "heads": 2, "task": "toy"}
    save_module(tmp_path / "c", "controller", controller, meta)
    loaded, loaded_meta = load_controller(tmp_path / "c")
    a, s = torch.randn(3, ACT), _states(3, 1)[:, 0]
    assert torch.equal(loaded(a, s), controller(a, s)) and loaded_meta == meta
    assert not list((tmp_path / "c").glob(".*tmp*"))
    with pytest.raises(FileNotFoundError, match="no controller"):
        load_controller(tmp_path)


def test_plan_settings_validate():
    assert PlanSettings(horizon=1, hold=8).span == 8
    with pytest.raises(ValueError, match="elites"):
        PlanSettings(samples=5, elites=6)
    with pytest.raises(ValueError, match="method"):
        PlanSettings(method="grad")


def test_controller_latent_fit_r2():
    """R² is 1 for a controller that returns the targets, 0 for one that returns their mean."""
    targets = torch.randn(50, LATENT, generator=torch.Generator().manual_seed(3))
    actions = torch.randn(50, ACT)
    exact = controller_latent_fit(lambda a, s: targets, actions, None, targets)
    mean = controller_latent_fit(lambda a, s: targets.mean(0).expand_as(targets), actions, None, targets)
    assert exact["heldout_latent_l2"] == 0 and exact["heldout_r2"] == 1
    assert mean["heldout_r2"] == pytest.approx(0.0, abs=1e-6)
    assert mean["heldout_latent_variance"] == pytest.approx(mean["heldout_latent_l2"])

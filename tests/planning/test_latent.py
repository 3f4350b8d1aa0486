"""Planning over latent actions with the world model: the shared-prefix cached rollout equals
recomputation, and CEM drives the model to a reachable goal."""

import pytest
import torch

from lam_fast.models import LatentActionWorldModel, ModelConfig
from lam_fast.ops import KVCache
from lam_fast.planning import CEMConfig, MPPIConfig
from lam_fast.planning.latent import LatentRollout, plan_latents

GRID, DIM, LATENT = (2, 3), 10, 4


def _model(reg="sparse", seed=0):
    torch.manual_seed(seed)
    model = LatentActionWorldModel(ModelConfig(reg=reg, latent_dim=LATENT, preset="tiny"), state_dim=DIM, grid=GRID)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the AdaLN-zero init, where the prediction ignores z
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def _states(b, t, seed=1):
    return torch.randn(b, t, GRID[0] * GRID[1], DIM, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("context", [1, 3])
def test_shared_prefix_rollout_equals_recompute_and_model_rollout(context):
    model = _model()
    states = _states(2, context)
    z_obs = torch.randn(2, context - 1, LATENT)
    candidates = torch.randn(2, 5, 3, LATENT, generator=torch.Generator().manual_seed(2))
    cached = LatentRollout(model, states, z_obs).end_states(candidates)
    recomputed = LatentRollout(model, states, z_obs, use_cache=False).end_states(candidates)
    assert cached.shape == (2, 5, GRID[0] * GRID[1], DIM)
    torch.testing.assert_close(cached, recomputed, rtol=1e-5, atol=1e-5)
    for b, s in [(0, 0), (1, 4)]:  # one candidate through the model's own rollout
        z = torch.cat([z_obs[b : b + 1], candidates[b, s][None]], dim=1)
        torch.testing.assert_close(model.rollout(states[b : b + 1], z)[0, -1], cached[b, s], rtol=1e-5, atol=1e-5)


def test_the_prefix_cache_is_reused_unchanged_across_calls():
    model = _model()
    rollout = LatentRollout(model, _states(1, 3), torch.randn(1, 2, LATENT))
    candidates = torch.randn(1, 4, 2, LATENT)
    first = rollout.end_states(candidates)
    assert rollout.prefix.num_frames == 2  # frames 0..T0-2, shared by every candidate
    assert torch.equal(rollout.end_states(candidates), first)


def test_kv_cache_repeat_batch():
    cache = KVCache(max_frames=3)
    k, v = torch.randn(2, 1, 4, 2), torch.randn(2, 1, 4, 2)
    cache.append(k, v, frame_tokens=2)
    rep = cache.repeat_batch(3)
    keys, values = rep.append(torch.zeros(6, 1, 2, 2), torch.zeros(6, 1, 2, 2), frame_tokens=2)
    assert rep.num_frames == 3 and cache.num_frames == 2
    assert torch.equal(keys[:, :, :4], k.repeat_interleave(3, dim=0))
    assert torch.equal(values[:, :, :4], v.repeat_interleave(3, dim=0))
    with pytest.raises(ValueError, match="repeats"):
        cache.repeat_batch(0)


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_planning_reaches_a_goal_the_model_can_reach(method):
    """The goal is the model's own imagined end state under a hidden latent sequence: planning must
    find latents that end at most half as far from it as z = 0 does (CEM gets to ~0.1 of that
    distance with the paper's 300 x 15, MPPI to ~0.3)."""
    model = _model()
    context = _states(2, 2)
    g = torch.Generator().manual_seed(3)
    hidden = 0.5 * torch.randn(2, 1, 3, LATENT, generator=g)
    rollout = LatentRollout(model, context, model.infer_actions(context))
    goal = rollout.end_states(hidden)[:, 0]
    if method == "cem":
        config = CEMConfig(samples=200, elites=10, iterations=10)
    else:  # the temperature sets the softmin's sharpness against costs of a few units
        config = MPPIConfig(samples=200, iterations=10, noise_std=0.3, temperature=0.05)
    result = plan_latents(model, context, goal, method=method, config=config, generator=torch.Generator().manual_seed(0))
    assert result.best.shape == (2, 3, LATENT)
    baseline = (rollout.end_states(torch.zeros(2, 1, 3, LATENT))[:, 0] - goal).flatten(1).norm(dim=1)
    reached = (rollout.end_states(result.best[:, None])[:, 0] - goal).flatten(1).norm(dim=1)
    torch.testing.assert_close(reached, result.best_cost, rtol=1e-4, atol=1e-4)
    assert torch.all(reached < 0.5 * baseline)


def test_bad_inputs_raise():
    model = _model()
    with pytest.raises(ValueError, match="goal"):
        plan_latents(model, _states(1, 2), torch.zeros(1, 5, DIM))
    with pytest.raises(ValueError, match="method"):
        plan_latents(model, _states(1, 2), torch.zeros(1, 6, DIM), method="random")
    with pytest.raises(ValueError, match="deterministic"):
        LatentRollout(_model("deterministic"), _states(1, 2), torch.zeros(1, 1, LATENT))

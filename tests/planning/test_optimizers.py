"""CEM and MPPI on costs with a known optimum."""

import pytest
import torch

from lam_fast.planning import CEMConfig, MPPIConfig, cem, mppi


def quadratic(targets: torch.Tensor, scales: torch.Tensor):
    """cost(x) = sum_i scale_i (x_i - target_i)^2 per problem: minimum 0 at the target.
    targets: (B, H, A); scales: (H, A) positive (an anisotropic bowl)."""

    def cost(candidates):  # (B, S, H, A) -> (B, S)
        return ((candidates - targets[:, None]) ** 2 * scales).sum(dim=(2, 3))

    return cost


def _problem(seed, b=3, h=3, a=2):
    g = torch.Generator().manual_seed(seed)
    targets = 0.5 * torch.randn(b, h, a, generator=g)  # inside the N(0, I) the planners start from
    scales = torch.rand(h, a, generator=g) + 0.5  # in [0.5, 1.5): cost < eps means |x - target| < sqrt(2 eps)
    return targets, scales


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cem_finds_the_minimum_of_a_quadratic(seed):
    targets, scales = _problem(seed)
    # the paper's protocol (CEMConfig defaults): 300 samples, 10 elites, 15 iterations, H = 3
    result = cem(quadratic(targets, scales), batch=3, action_dim=2, generator=torch.Generator().manual_seed(seed))
    assert result.best.shape == (3, 3, 2) and result.first_action.shape == (3, 2)
    assert torch.all(result.best_cost < 1e-3)
    torch.testing.assert_close(result.best, targets, atol=0.045, rtol=0)  # sqrt(2e-3), from the cost bound
    torch.testing.assert_close(result.mean, targets, atol=0.045, rtol=0)
    # the best cost seen never increases, and the search improves on the first iteration
    assert torch.all(result.cost_history[1:] <= result.cost_history[:-1])
    assert torch.all(result.cost_history[-1] < result.cost_history[0] / 100)


@pytest.mark.parametrize("seed", [0, 1])
def test_mppi_finds_the_minimum_of_a_quadratic(seed):
    targets, scales = _problem(seed)
    config = MPPIConfig(samples=500, iterations=40, noise_std=0.2, temperature=0.02)
    result = mppi(quadratic(targets, scales), batch=3, action_dim=2, config=config,
                  generator=torch.Generator().manual_seed(seed))
    assert torch.all(result.best_cost < 1e-2)
    torch.testing.assert_close(result.mean, targets, atol=0.1, rtol=0)


def test_the_best_sequence_is_the_argmin_of_everything_evaluated():
    seen = []

    def cost(candidates):
        c = candidates.pow(2).sum(dim=(2, 3)) + 1.0
        seen.append((candidates.clone(), c))
        return c

    result = cem(cost, batch=2, action_dim=1, config=CEMConfig(samples=20, elites=4, iterations=3, horizon=2),
                 generator=torch.Generator().manual_seed(0))
    everything = torch.cat([c for _, c in seen], dim=1)
    candidates = torch.cat([x for x, _ in seen], dim=1)
    idx = everything.argmin(dim=1)
    torch.testing.assert_close(result.best_cost, everything.min(dim=1).values)
    torch.testing.assert_close(result.best, candidates[torch.arange(2), idx])


def test_plans_are_reproducible_from_the_generator():
    targets, scales = _problem(5)
    runs = [cem(quadratic(targets, scales), batch=3, action_dim=2, generator=torch.Generator().manual_seed(9))
            for _ in range(2)]
    assert torch.equal(runs[0].best, runs[1].best)


def test_init_mean_warm_starts_the_search():
    targets, scales = _problem(3)
    config = CEMConfig(iterations=1, init_std=1e-3)
    result = cem(quadratic(targets, scales), batch=3, action_dim=2, config=config, init_mean=targets,
                 generator=torch.Generator().manual_seed(0))
    assert torch.all(result.best_cost < 1e-4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="elites"):
        CEMConfig(samples=5, elites=6)
    with pytest.raises(ValueError, match="temperature"):
        MPPIConfig(temperature=0.0)
    with pytest.raises(ValueError, match="cost_fn must return"):
        cem(lambda c: c.sum(dim=(2, 3))[:, :1], batch=2, action_dim=1)
    with pytest.raises(ValueError, match="init_mean"):
        mppi(lambda c: c.sum(dim=(2, 3)), batch=2, action_dim=1, init_mean=torch.zeros(2, 4, 1))

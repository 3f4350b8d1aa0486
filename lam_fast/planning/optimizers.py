"""Cross-entropy method and MPPI over action sequences, batched over independent problems.

Both optimise ``cost_fn(candidates) -> costs`` with candidates (B, S, H, A): B planning problems,
S sampled sequences each, H steps of A-dimensional actions (real actions, or latent actions when the
world model is driven directly); costs (B, S), lower is better. The cost function sees every
candidate of every problem in one call, so a world-model rollout runs as one batch of B*S.

Defaults follow the paper's manipulation protocol (PAPER.md section 4): CEM with 300 samples, the
top 10 as elites, 15 iterations, H = 3, initialised N(0, I); the first action of the best sequence
is executed. Sampling uses an explicit ``torch.Generator``, so a plan is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

CostFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CEMConfig:
    samples: int = 300
    elites: int = 10
    iterations: int = 15
    horizon: int = 3
    init_std: float = 1.0
    min_std: float = 1e-4  # keeps the search alive when the elites collapse onto one point

    def __post_init__(self):
        if self.samples < 1 or self.iterations < 1 or self.horizon < 1:
            raise ValueError(f"samples, iterations and horizon must be >= 1: {self}")
        if not 1 <= self.elites <= self.samples:
            raise ValueError(f"elites must be in [1, samples={self.samples}], got {self.elites}")
        if self.init_std <= 0 or self.min_std < 0:
            raise ValueError(f"init_std must be > 0 and min_std >= 0: {self}")


@dataclass(frozen=True)
class MPPIConfig:
    samples: int = 300
    iterations: int = 15
    horizon: int = 3
    noise_std: float = 1.0
    temperature: float = 1.0  # lambda: weights exp(-(cost - min cost) / temperature)

    def __post_init__(self):
        if self.samples < 1 or self.iterations < 1 or self.horizon < 1:
            raise ValueError(f"samples, iterations and horizon must be >= 1: {self}")
        if self.noise_std <= 0 or self.temperature <= 0:
            raise ValueError(f"noise_std and temperature must be > 0: {self}")


@dataclass
class PlanResult:
    best: torch.Tensor  # (B, H, A) lowest-cost sequence seen over all iterations
    best_cost: torch.Tensor  # (B,)
    mean: torch.Tensor  # (B, H, A) final sampling mean
    cost_history: torch.Tensor  # (iterations, B) best cost seen up to each iteration

    @property
    def first_action(self) -> torch.Tensor:
        """(B, A): what a receding-horizon controller executes."""
        return self.best[:, 0]


def _check_costs(costs: torch.Tensor, b: int, s: int) -> torch.Tensor:
    if costs.shape != (b, s):
        raise ValueError(f"cost_fn must return (B, S) = {(b, s)} costs, got {tuple(costs.shape)}")
    return costs


class _Best:
    """Tracks the lowest-cost sequence per problem across iterations."""

    def __init__(self, b: int, h: int, a: int, like: torch.Tensor):
        self.seq = like.new_zeros(b, h, a)
        self.cost = torch.full((b,), float("inf"), dtype=torch.float32, device=like.device)
        self.history: list[torch.Tensor] = []

    def update(self, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        c, idx = costs.float().min(dim=1)
        better = c < self.cost
        self.cost = torch.where(better, c, self.cost)
        chosen = candidates[torch.arange(candidates.shape[0], device=idx.device), idx]
        self.seq = torch.where(better[:, None, None], chosen, self.seq)
        self.history.append(self.cost.clone())


def _init_mean(init_mean: torch.Tensor | None, b: int, h: int, a: int, device, dtype) -> torch.Tensor:
    if init_mean is None:
        return torch.zeros(b, h, a, device=device, dtype=dtype)
    if init_mean.shape != (b, h, a):
        raise ValueError(f"init_mean must be (B, H, A) = {(b, h, a)}, got {tuple(init_mean.shape)}")
    return init_mean.to(device, dtype)


@torch.no_grad()
def cem(
    cost_fn: CostFn,
    *,
    batch: int,
    action_dim: int,
    config: CEMConfig = CEMConfig(),
    init_mean: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PlanResult:
    """Cross-entropy method: sample N(mean, std^2) sequences, refit mean and std to the elites.

    Returns the best sequence seen (not only the last mean), its cost and the per-iteration history.
    """
    b, s, h, a = batch, config.samples, config.horizon, action_dim
    mean = _init_mean(init_mean, b, h, a, device, dtype)
    std = torch.full_like(mean, config.init_std)
    best = _Best(b, h, a, mean)
    for _ in range(config.iterations):
        noise = torch.randn((b, s, h, a), generator=generator, device=device, dtype=dtype)
        candidates = mean[:, None] + std[:, None] * noise
        costs = _check_costs(cost_fn(candidates), b, s)
        best.update(candidates, costs)
        elite_idx = costs.float().topk(config.elites, dim=1, largest=False).indices  # (B, E)
        elites = torch.gather(candidates, 1, elite_idx[:, :, None, None].expand(-1, -1, h, a))
        mean = elites.mean(dim=1)
        std = elites.std(dim=1, unbiased=False).clamp_min(config.min_std) if config.elites > 1 else std
    return PlanResult(best.seq, best.cost, mean, torch.stack(best.history))


@torch.no_grad()
def mppi(
    cost_fn: CostFn,
    *,
    batch: int,
    action_dim: int,
    config: MPPIConfig = MPPIConfig(),
    init_mean: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PlanResult:
    """Model predictive path integral: perturb the mean with fixed-std noise and move it to the
    softmin-weighted average of the samples, weights exp(-(cost - min cost) / temperature)."""
    b, s, h, a = batch, config.samples, config.horizon, action_dim
    mean = _init_mean(init_mean, b, h, a, device, dtype)
    best = _Best(b, h, a, mean)
    for _ in range(config.iterations):
        noise = torch.randn((b, s, h, a), generator=generator, device=device, dtype=dtype)
        candidates = mean[:, None] + config.noise_std * noise
        costs = _check_costs(cost_fn(candidates), b, s).float()
        best.update(candidates, costs)
        weights = torch.softmax(-(costs - costs.min(dim=1, keepdim=True).values) / config.temperature, dim=1)
        mean = (weights[:, :, None, None].to(dtype) * candidates).sum(dim=1)
    return PlanResult(best.seq, best.cost, mean, torch.stack(best.history))

"""Planning metrics of PAPER.md section 4.

- Manipulation (DROID protocol): the L1 distance between the summed planned actions and the summed
  ground-truth actions of an episode. :func:`delta_action_l1` computes it for any actions, in their
  own unit, which the caller states with the result: on our MuJoCo reacher the actions are
  joint-angle deltas, so it is in radians (the ``delta_actions`` key of ``lam-fast plan``).
  :func:`delta_xyz` is the same number under the DROID protocol's name, where the actions are
  end-effector displacements ``(x, y, z)`` in metres.
- Navigation (RECON / NWM protocol): ``ate`` (absolute trajectory error: mean Euclidean distance
  between planned and true positions at the same step) and ``rpe`` (relative pose error: mean
  Euclidean distance between the planned and true per-step displacements), both on positions
  (T, 2) or (T, 3) that start at the same pose, in the positions' unit (metres). Batched over
  leading dimensions.
"""

from __future__ import annotations

import torch


def _check_pair(name: str, a: torch.Tensor, b: torch.Tensor, min_steps: int) -> None:
    if a.shape != b.shape or a.dim() < 2 or a.shape[-2] < min_steps:
        raise ValueError(f"{name}: planned and true must share a shape (..., T >= {min_steps}, D), "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def _summed_l1(name: str, planned: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    _check_pair(name, planned, true, 1)
    return (planned.sum(dim=-2) - true.sum(dim=-2)).abs().sum(dim=-1)


def delta_action_l1(planned_actions: torch.Tensor, true_actions: torch.Tensor) -> torch.Tensor:
    """(..., T, A) actions -> (...,): || sum_t planned_t - sum_t true_t ||_1, in the actions' unit."""
    return _summed_l1("delta_action_l1", planned_actions, true_actions)


def delta_xyz(planned_actions: torch.Tensor, true_actions: torch.Tensor) -> torch.Tensor:
    """The DROID protocol's Δxyz: (..., T, 3) end-effector displacements (metres) -> (...,)
    ``|| sum_t planned_t - sum_t true_t ||_1`` in metres. For actions that are not end-effector
    displacements (joint angles, ...) use :func:`delta_action_l1` and state their unit."""
    return _summed_l1("delta_xyz", planned_actions, true_actions)


def ate(planned_positions: torch.Tensor, true_positions: torch.Tensor) -> torch.Tensor:
    """(..., T, D) positions -> (...,): mean_t || planned_t - true_t ||_2."""
    _check_pair("ate", planned_positions, true_positions, 1)
    return (planned_positions - true_positions).norm(dim=-1).mean(dim=-1)


def rpe(planned_positions: torch.Tensor, true_positions: torch.Tensor) -> torch.Tensor:
    """(..., T, D) positions -> (...,): mean_t || (planned_{t+1} - planned_t) - (true_{t+1} - true_t) ||_2."""
    _check_pair("rpe", planned_positions, true_positions, 2)
    return (planned_positions.diff(dim=-2) - true_positions.diff(dim=-2)).norm(dim=-1).mean(dim=-1)

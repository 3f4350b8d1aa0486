"""Task descriptions and action normalisation (lam_fast.envs.tasks): no MuJoCo needed."""

from types import SimpleNamespace

import pytest
import torch

from lam_fast.envs import TASK_INFO, action_bounds, denormalise_actions, normalise_actions

INFO = SimpleNamespace(name="toy", action_names=("a", "b"), action_low=(-0.5, 0.0), action_high=(0.5, 2.0))


def test_action_normalisation_round_trips_and_clamps():
    a = torch.tensor([[-0.5, 0.0], [0.5, 2.0], [0.0, 1.0]])
    u = normalise_actions(a, INFO)
    torch.testing.assert_close(u, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(denormalise_actions(u, INFO), a)
    torch.testing.assert_close(denormalise_actions(torch.tensor([[3.0, -3.0]]), INFO), torch.tensor([[0.5, 0.0]]))


@pytest.mark.parametrize("task", sorted(TASK_INFO))
def test_bounds_of_every_task_map_to_minus_one_and_one(task):
    low, high = action_bounds(TASK_INFO[task])
    torch.testing.assert_close(normalise_actions(torch.stack([low, high]), TASK_INFO[task]),
                               torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))

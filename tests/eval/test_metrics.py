"""Planning metrics against hand-computed trajectories."""

import pytest
import torch

from lam_fast.eval.metrics import ate, delta_action_l1, delta_xyz, rpe


def test_delta_xyz_compares_summed_actions():
    planned = torch.tensor([[0.1, 0.0, 0.0], [0.1, 0.2, 0.0]])
    true = torch.tensor([[0.0, 0.1, 0.0], [0.3, 0.0, -0.1]])
    # sums (0.2, 0.2, 0) vs (0.3, 0.1, -0.1): |−0.1| + |0.1| + |0.1| = 0.3
    assert delta_xyz(planned, true).item() == pytest.approx(0.3)
    # the order of the steps does not matter, only where they end up
    assert delta_xyz(planned.flip(0), true).item() == pytest.approx(0.3)


def test_delta_action_l1_is_delta_xyz_for_any_action_unit():
    """The reacher's joint-angle deltas (radians, 2-d) are scored by delta_action_l1: the same
    summed-L1 number as the DROID protocol's delta_xyz, without claiming metres."""
    g = torch.Generator().manual_seed(0)
    planned, true = torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    expected = (planned.sum(1) - true.sum(1)).abs().sum(-1)
    torch.testing.assert_close(delta_action_l1(planned, true), expected)
    torch.testing.assert_close(delta_xyz(planned, true), expected)
    with pytest.raises(ValueError, match="delta_action_l1"):
        delta_action_l1(planned, true[:, :2])


def test_ate_and_rpe_on_hand_computed_paths():
    true = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])  # straight line, 1 m per step
    shifted = true + torch.tensor([0.0, 0.5])  # the same path 0.5 m to the side
    assert ate(shifted, true).item() == pytest.approx(0.5)
    assert rpe(shifted, true).item() == pytest.approx(0.0)  # every step is right
    drifting = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])  # 45 degrees off
    assert ate(drifting, true).item() == pytest.approx((0 + 1 + 2 + 3) / 4)
    assert rpe(drifting, true).item() == pytest.approx(1.0)  # each step off by (0, 1)
    batch = torch.stack([shifted, drifting])
    torch.testing.assert_close(ate(batch, true.expand(2, -1, -1)), torch.tensor([0.5, 1.5]))


def test_metrics_validate_shapes():
    with pytest.raises(ValueError, match="share a shape"):
        ate(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="T >= 2"):
        rpe(torch.zeros(1, 2), torch.zeros(1, 2))

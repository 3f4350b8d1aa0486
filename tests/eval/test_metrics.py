"""Planning metrics against hand-computed trajectories."""

import pytest
import torch

from lam_fast.eval.metrics import ate, delta_xyz, rpe


def test_delta_xyz_compares_summed_actions():
    planned = torch.tensor([[0.1, 0.0, 0.0], [0.1, 0.2, 0.0]])
    true = torch.tensor([[0.0, 0.1, 0.0], [0.3, 0.0, -0.1]])
    # sums (0.2, 0.2, 0) vs (0.3, 0.1, -0.1): |−0.1| + |0.1| + |0.1| = 0.3
    assert delta_xyz(planned, true).item() == pytest.approx(0.3)
    # the order of the steps does not matter, only where they end up
    assert delta_xyz(planned.flip(0), true).item() == pytest.approx(0.3)


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

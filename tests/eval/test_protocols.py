"""Leakage and transfer protocols on tiny models and hand-built data."""

import pytest
import torch

from lam_fast.eval import leakage, transfer
from lam_fast.models import LatentActionWorldModel, ModelConfig

GRID, DIM = (2, 2), 6


def _model(reg="sparse", seed=0, scale=0.1):
    torch.manual_seed(seed)
    model = LatentActionWorldModel(ModelConfig(reg=reg, latent_dim=4, preset="tiny"), state_dim=DIM, grid=GRID)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def _smooth_clips(b=4, t=6, seed=0):
    """Each clip drifts slowly from its own random start: consecutive frames are close, clips differ."""
    g = torch.Generator().manual_seed(seed)
    start = 3 * torch.randn(b, 1, GRID[0] * GRID[1], DIM, generator=g)
    steps = 0.05 * torch.randn(b, t, GRID[0] * GRID[1], DIM, generator=g).cumsum(dim=1)
    return start + steps


def test_a_cut_raises_the_error_of_a_model_that_cannot_see_the_future():
    """An untrained model predicts "no change" (AdaLN-zero, residual): it cannot know the cut
    frame, so its error jumps from the slow drift to the distance between clips."""
    model = LatentActionWorldModel(ModelConfig(reg="sparse", latent_dim=4, preset="tiny"), state_dim=DIM, grid=GRID)
    out = leakage(model.eval(), _smooth_clips())
    assert out["error_changed"] > 10 * out["error_original"]
    assert out["ratio"] == pytest.approx(out["error_changed"] / out["error_original"])
    assert len(out["per_clip"]["error_changed"]) == 4 and out["cut"] == 3


def test_leakage_without_a_real_change_is_neutral():
    """Cutting a batch of identical clips swaps nothing: both errors are equal."""
    clip = _smooth_clips(b=1)
    out = leakage(_model(), clip.expand(3, -1, -1, -1).contiguous(), cut=2)
    assert out["ratio"] == pytest.approx(1.0)


def test_transferring_latents_to_the_same_clip_is_the_identity():
    states = _smooth_clips()
    model = _model()
    out = transfer(model, states, targets=torch.arange(4))  # every clip is its own target
    z = model.infer_actions(states)
    torch.testing.assert_close(out["imagined_target"], model.rollout(states[:, :1], z))
    out_default = transfer(model, states)
    assert out_default["targets"] == [1, 2, 3, 0]
    assert set(out_default) >= {"error_original", "error_transferred", "ratio"}
    assert out_default["ratio"] == pytest.approx(out_default["error_transferred"] / out_default["error_original"])


def test_protocols_validate_inputs():
    with pytest.raises(ValueError, match="B >= 2"):
        leakage(_model(), _smooth_clips(b=1))
    with pytest.raises(ValueError, match="cut"):
        leakage(_model(), _smooth_clips(), cut=6)
    with pytest.raises(ValueError, match="deterministic"):
        transfer(_model("deterministic"), _smooth_clips())

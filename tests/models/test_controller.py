"""Controllers: the cross-attention one maps actions to view-dependent latents, the MLP cannot."""

import pytest
import torch

from lam_fast.models import CrossAttentionController, MLPController
from lam_fast.training.controller import ControllerTraining, train_controller


def _camera_relative_data(m=512, seed=0):
    """The latent is the action rotated by the 'camera': +a when the view token says +1, -a when -1.
    An action-only map can only learn the average, 0 ("no movement"); a state-aware one can do it."""
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(m, 2, generator=g)
    view = torch.randint(0, 2, (m,), generator=g) * 2 - 1  # +-1
    states = torch.randn(m, 4, 3, generator=g) * 0.1
    states[:, 0, 0] = view.float()  # token 0, channel 0 carries the view
    targets = torch.cat([actions * view[:, None], torch.zeros(m, 2)], dim=1)  # (M, 4)
    return actions, states, targets


SETTINGS = ControllerTraining(steps=300, warmup_steps=30, batch_size=128, lr=3e-3)


def test_cross_attention_controller_learns_camera_relative_latents_and_the_mlp_collapses():
    actions, states, targets = _camera_relative_data()
    torch.manual_seed(0)
    xattn = CrossAttentionController(2, 3, 4, 4, width=32, heads=2)
    mlp = MLPController(2, 4, hidden=64)
    xattn_losses = train_controller(xattn, actions, states, targets, SETTINGS)
    mlp_losses = train_controller(mlp, actions, None, targets, SETTINGS)
    baseline = targets.pow(2).sum(dim=1).mean().item()  # predicting 0
    with torch.no_grad():
        xattn_err = (xattn(actions, states) - targets).pow(2).sum(dim=1).mean().item()
        mlp_err = (mlp(actions) - targets).pow(2).sum(dim=1).mean().item()
    assert xattn_err < 0.1 * baseline
    assert mlp_err > 0.8 * baseline  # the best action-only answer is "no movement"
    assert xattn_losses[-1] < xattn_losses[0] and len(mlp_losses) == SETTINGS.steps


def test_controller_shapes_and_validation():
    c = CrossAttentionController(3, 5, 6, 8, width=16, heads=2)
    assert c(torch.randn(2, 3), torch.randn(2, 6, 5)).shape == (2, 8)
    with pytest.raises(ValueError, match="states"):
        c(torch.randn(2, 3))
    with pytest.raises(ValueError, match="first dim"):
        train_controller(c, torch.randn(4, 3), torch.randn(3, 6, 5), torch.randn(4, 8), SETTINGS)
    with pytest.raises(ValueError, match="invalid"):
        ControllerTraining(steps=10, warmup_steps=10)

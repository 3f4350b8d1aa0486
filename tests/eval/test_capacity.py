"""Capacity protocol (PAPER.md section 2): one-step error with IDM latents vs the deterministic baseline."""

import pytest
import torch

from lam_fast.eval import capacity
from lam_fast.eval.protocols import capacity_knob
from lam_fast.models import LatentActionWorldModel, ModelConfig
from lam_fast.models.config import DiscreteConfig, NoisyConfig, SparseConfig

GRID, DIM = (2, 2), 6


def _model(reg="sparse", perturb=0.0, seed=0, **cfg):
    torch.manual_seed(seed)
    model = LatentActionWorldModel(ModelConfig(reg=reg, latent_dim=4, preset="tiny", **cfg), state_dim=DIM, grid=GRID)
    if perturb:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * perturb)
    return model.eval()


def _clips(b=3, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, GRID[0] * GRID[1], DIM, generator=g) + 0.1 * torch.randn(
        b, t, GRID[0] * GRID[1], DIM, generator=g).cumsum(dim=1)


def test_untrained_models_predict_no_change_like_the_baseline():
    """AdaLN-zero + residual: every untrained model is the copy predictor, latent or not."""
    states = _clips()
    out = capacity([_model("sparse"), _model("noisy"), _model("discrete")], _model("deterministic"), states)
    copy_error = (states[:, 1:] - states[:, :-1]).abs().mean().item()
    assert out["baseline"]["error"] == pytest.approx(copy_error, rel=1e-5)
    assert [r["reg"] for r in out["runs"]] == ["sparse", "noisy", "discrete"]
    for r in out["runs"]:
        assert r["error"] == pytest.approx(out["baseline"]["error"], rel=1e-5)
        assert r["rel_to_baseline"] == pytest.approx(1.0, rel=1e-5)
        assert len(r["per_clip"]) == 3
    assert out["clips"] == 3 and "one-step" in out["metric"]


def test_rel_to_baseline_is_the_error_ratio_and_models_may_come_lazily():
    states = _clips(b=2)
    baseline = _model("deterministic", perturb=0.05, seed=1)
    models = (_model("sparse", perturb=0.05, seed=s, sparse=SparseConfig(lambda_l1=l1)) for s, l1 in [(2, 0.2), (3, 0.02)])
    out = capacity(models, baseline, states)
    assert len(out["runs"]) == 2
    for r, l1 in zip(out["runs"], [0.2, 0.02]):
        assert r["capacity_knob"] == "lambda_l1" and r["knob_value"] == pytest.approx(l1)
        assert r["rel_to_baseline"] == pytest.approx(r["error"] / out["baseline"]["error"])
        assert r["error"] == pytest.approx(sum(r["per_clip"]) / 2)
    assert out["runs"][0]["error"] != pytest.approx(out["baseline"]["error"])


def test_capacity_knobs():
    assert capacity_knob(ModelConfig(reg="noisy", noisy=NoisyConfig(beta=1e-3))) == ("beta", 1e-3)
    assert capacity_knob(ModelConfig(reg="discrete", discrete=DiscreteConfig(codebook_size=16))) == ("codebook_size", 16)
    assert capacity_knob(ModelConfig(reg="none")) == (None, None)
    out = capacity([_model("none")], _model("deterministic"), _clips(b=1))
    assert out["runs"][0]["capacity_knob"] is None and out["clips"] == 1


def test_capacity_validates_its_inputs():
    with pytest.raises(ValueError, match="baseline must be a deterministic"):
        capacity([_model()], _model("sparse"), _clips())
    with pytest.raises(ValueError, match="deterministic"):
        capacity([_model("deterministic")], _model("deterministic"), _clips())
    with pytest.raises(ValueError, match="T >= 2"):
        capacity([_model()], _model("deterministic"), _clips(t=1))

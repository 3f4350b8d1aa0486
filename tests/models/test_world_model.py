"""Predictor, AdaLN-zero block, IDM and LatentActionWorldModel properties."""

import pytest
import torch

from lam_fast.models import PREDICTOR_PRESETS, REGULARIZERS, LatentActionWorldModel, ModelConfig
from lam_fast.nn import AdaLNZeroBlock
from lam_fast.ops import Rope3D

GRID, DIM = (2, 3), 10


def _perturb(module, seed=0, scale=0.05):
    """Move every parameter off its init (AdaLN-zero starts as the identity, which hides bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module


def _model(reg, seed=0):
    torch.manual_seed(seed)
    return LatentActionWorldModel(ModelConfig(reg=reg, latent_dim=8, preset="tiny"), state_dim=DIM, grid=GRID)


def _states(b=2, t=5, seed=1):
    return torch.randn(b, t, GRID[0] * GRID[1], DIM, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_adaln_zero_block_is_identity_at_init(backend):
    torch.manual_seed(0)
    block = AdaLNZeroBlock(16, 2, backend=backend)
    x = torch.randn(2, 3 * 6, 16)
    c = torch.randn(2, 3, 16)
    rope = Rope3D(8, (2, 3))
    assert torch.equal(block(x, c, frame_tokens=6, rope=rope), x)
    _perturb(block)
    assert not torch.allclose(block(x, c, frame_tokens=6, rope=rope), x)


@pytest.mark.parametrize("reg", REGULARIZERS)
def test_loss_dictionary(reg):
    model = _model(reg)
    out = model(_states())
    assert torch.isfinite(out["loss"])
    assert "pred_l1" in out
    terms = sum(v for k, v in out.items() if k == "pred_l1" or k.startswith("reg/"))
    torch.testing.assert_close(out["loss"], terms)
    expected = {
        "sparse": {"reg/variance", "reg/covariance", "reg/mean", "reg/energy"},
        "noisy": {"reg/kl"},
        "discrete": {"reg/vq_codebook", "reg/vq_commitment"},
        "unconstrained": set(),
        "deterministic": set(),
    }[reg]
    assert {k for k in out if k.startswith("reg/")} == expected
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("reg", ["sparse", "deterministic"])
def test_predictor_is_frame_causal(reg):
    model = _perturb(_model(reg)).eval()
    states = _states(t=6)
    z = None if reg == "deterministic" else torch.randn(2, 6, 8)
    base = model.predict(states, z)
    for cut in range(1, 6):
        s2 = states.clone()
        s2[:, cut:] += 1.0
        z2 = None if z is None else z.clone()
        if z2 is not None:
            z2[:, cut:] += 1.0
        out = model.predict(s2, z2)
        assert torch.equal(out[:, :cut], base[:, :cut]), cut
        assert not torch.allclose(out[:, cut:], base[:, cut:])


def test_latent_conditions_only_its_frame():
    model = _perturb(_model("sparse")).eval()
    states, z = _states(t=4), torch.randn(2, 4, 8)
    base = model.predict(states, z)
    z2 = z.clone()
    z2[:, 2] += 1.0
    out = model.predict(states, z2)
    assert torch.equal(out[:, :2], base[:, :2])
    assert not torch.allclose(out[:, 2], base[:, 2])


def test_idm_sees_only_its_pair():
    model = _perturb(_model("sparse")).eval()
    states = _states(t=5)
    z = model.infer_actions(states)
    assert z.shape == (2, 4, 8)
    s2 = states.clone()
    s2[:, 4] += 1.0  # only the pair (s_3, s_4) changes
    z2 = model.infer_actions(s2)
    assert torch.equal(z2[:, :3], z[:, :3])
    assert not torch.allclose(z2[:, 3], z[:, 3])


@pytest.mark.parametrize("reg", ["sparse", "noisy", "discrete", "deterministic"])
@pytest.mark.parametrize("context", [1, 3])
def test_rollout_cache_equals_recompute(reg, context):
    model = _perturb(_model(reg)).eval()
    states = _states(t=context)
    horizon = 4
    z = None if reg == "deterministic" else torch.randn(2, context - 1 + horizon, 8)
    kw = {"horizon": horizon} if z is None else {}
    cached = model.rollout(states, z, **kw)
    recomputed = model.rollout(states, z, use_cache=False, **kw)
    assert cached.shape == (2, horizon, GRID[0] * GRID[1], DIM)
    torch.testing.assert_close(cached, recomputed, rtol=1e-5, atol=1e-5)


def test_rollout_first_step_is_the_teacher_forced_prediction():
    model = _perturb(_model("sparse")).eval()
    states = _states(t=3)
    z = model.infer_actions(states)
    rolled = model.rollout(states[:, :1], z)
    torch.testing.assert_close(rolled[:, 0], model.predict(states[:, :1], z[:, :1])[:, 0])


def test_noisy_and_discrete_inference_are_deterministic():
    for reg in ("noisy", "discrete"):
        model = _perturb(_model(reg))
        states = _states()
        assert torch.equal(model.infer_actions(states), model.infer_actions(states))


def test_validation_errors():
    model = _model("sparse")
    with pytest.raises(ValueError, match="states must be"):
        model(torch.randn(2, 5, 7, DIM))
    with pytest.raises(ValueError, match="z must be"):
        model.rollout(_states(t=3), torch.randn(2, 2, 8))
    with pytest.raises(ValueError, match="no latent actions"):
        _model("deterministic").infer_actions(_states())
    with pytest.raises(ValueError, match="reg="):
        ModelConfig(reg="bogus")


def test_presets():
    assert PREDICTOR_PRESETS["L"].depth == 24 and PREDICTOR_PRESETS["L"].width == 1024 and PREDICTOR_PRESETS["L"].heads == 16
    sizes = [PREDICTOR_PRESETS[k].width * PREDICTOR_PRESETS[k].depth for k in ("tiny", "S", "B", "L", "H", "G")]
    assert sizes == sorted(sizes)
    for cfg in PREDICTOR_PRESETS.values():
        assert 32 <= cfg.width // cfg.heads <= 128 or cfg.width == 128


def test_untrained_predictor_predicts_no_change():
    model = _model("sparse")
    states = _states()
    out = model(states)
    assert out["pred/rel_to_copy"].item() == pytest.approx(1.0, abs=1e-6)
    direct = LatentActionWorldModel(ModelConfig(reg="sparse", latent_dim=8, residual=False), state_dim=DIM, grid=GRID)
    assert torch.equal(direct.predict(states, torch.zeros(2, 5, 8)), torch.zeros_like(states))

"""Regularisers against hand-computed numbers (PAPER.md section 2)."""

import math

import pytest
import torch

from lam_fast.models.config import REG_CHOICES, REGULARIZERS, DiscreteConfig, ModelConfig, NoisyConfig, SparseConfig
from lam_fast.models.regularizers import (
    DiscreteRegularizer,
    NoisyRegularizer,
    SparseRegularizer,
    UnconstrainedLatent,
    build_regularizer,
    gaussian_kl,
    sparse_energy,
    vcm_terms,
)

# Z: N = 3 latents of D = 2
Z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]], dtype=torch.float64)


def test_sparse_energy_by_hand():
    cfg = SparseConfig(lambda_l1=0.1, lambda_l2=1.0)
    # sqrt(D) = 1.41421; ||z||^2 = 1, 4, 5; hinge = 0.41421, 0, 0; ||z||_1 = 1, 2, 3
    expected = torch.tensor([math.sqrt(2) - 1 + 0.1, 0.2, 0.3], dtype=torch.float64)
    torch.testing.assert_close(sparse_energy(Z, cfg), expected)


def test_vcm_by_hand():
    terms = vcm_terms(Z)
    # column 0: 1, 0, 2 -> mean 1, unbiased var 1; column 1: 0, 2, 1 -> mean 1, var 1
    # variance hinge: max(1 - sqrt(1 + 1e-4), 0) = 0 in both dims
    assert terms["variance"].item() == 0.0
    # cov_01 = ((0)(-1) + (-1)(1) + (1)(0)) / 2 = -0.5 -> off-diagonal sum of squares 2 * 0.25, / (D(D-1) = 2)
    torch.testing.assert_close(terms["covariance"], torch.tensor(0.25, dtype=torch.float64))
    # mean term: (|1| + |1|) / 2
    torch.testing.assert_close(terms["mean"], torch.tensor(1.0, dtype=torch.float64))
    small = vcm_terms(Z * 0.1)  # std 0.1 -> hinge 1 - sqrt(0.01 + 1e-4)
    torch.testing.assert_close(small["variance"], torch.tensor(1 - math.sqrt(0.0101), dtype=torch.float64))


def test_sparse_regularizer_total_uses_stated_weights():
    cfg = SparseConfig(lambda_l1=0.1)
    reg = SparseRegularizer(2, cfg)
    out = reg(Z)
    energy = (math.sqrt(2) - 1 + 0.1 + 0.2 + 0.3) / 3
    expected = {"reg/variance": 0.0, "reg/covariance": 0.001 * 0.25, "reg/mean": 0.1 * 1.0, "reg/energy": energy}
    for key, value in expected.items():
        assert out.losses[key].item() == pytest.approx(value, rel=1e-6, abs=1e-12), key
    assert out.z is Z
    with pytest.raises(ValueError, match="at least 2"):
        reg(Z[:1])


def test_sparse_langevin_samples_the_energy_distribution():
    # With lambda_l2 = 0, exp(-E) is a product of Laplace(0, 1/lambda_l1): E|z_d| = 1/lambda_l1.
    reg = SparseRegularizer(8, SparseConfig(lambda_l1=2.0, lambda_l2=0.0, langevin_steps=1500, langevin_step_size=0.01))
    samples = reg.sample_prior(2048, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2048, 8)
    assert samples.abs().mean().item() == pytest.approx(0.5, rel=0.08)
    assert samples.mean().abs().item() < 0.05
    # the L2 hinge max(sqrt(D) - ||z||^2, 0) pushes mass away from the origin
    hinged = SparseRegularizer(8, SparseConfig(lambda_l1=2.0, lambda_l2=1.0, langevin_steps=1500, langevin_step_size=0.01))
    pushed = hinged.sample_prior(2048, generator=torch.Generator().manual_seed(0))
    assert pushed.pow(2).sum(-1).mean() > samples.pow(2).sum(-1).mean()


def test_noisy_kl_by_hand_and_mean_at_inference():
    mean = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * [(1 + 1 - 1 - 0) + (0 + 2 - 1 - ln 2)]
    expected = 0.5 * (1.0 + 1.0 - math.log(2.0))
    assert gaussian_kl(mean, logvar).item() == pytest.approx(expected)
    reg = NoisyRegularizer(2, NoisyConfig(beta=0.01))
    h = torch.cat([mean, logvar], dim=-1).repeat(4, 1)
    out = reg(h)
    assert out.losses["reg/kl"].item() == pytest.approx(0.01 * expected)
    assert not torch.equal(out.z, mean.repeat(4, 1))  # sampled while training
    reg.eval()
    assert torch.equal(reg(h).z, mean.repeat(4, 1))
    assert torch.equal(reg.infer(h), mean.repeat(4, 1))
    assert reg.idm_out_dim == 4
    assert reg.sample_prior(7, generator=torch.Generator().manual_seed(0)).shape == (7, 2)


def test_discrete_losses_perplexity_and_prior():
    reg = DiscreteRegularizer(2, DiscreteConfig(codebook_size=4))
    with torch.no_grad():
        reg.quantizer.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    h = torch.tensor([[0.1, 0.0], [0.9, 0.1], [0.0, 1.2], [0.0, 0.0]])
    out = reg(h)
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    mse = ((h - codes) ** 2).mean()
    assert out.losses["reg/vq_codebook"].item() == pytest.approx(mse.item())
    assert out.losses["reg/vq_commitment"].item() == pytest.approx(0.25 * mse.item())
    # code usage in the batch: 2, 1, 1, 0 of 4 -> perplexity exp(H(0.5, 0.25, 0.25))
    h_entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert out.metrics["vq/perplexity"].item() == pytest.approx(math.exp(h_entropy))
    assert out.metrics["vq/batch_usage"].item() == pytest.approx(0.75)
    torch.testing.assert_close(out.z, codes)
    prior = reg.sample_prior(50, generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(p, c) for c in reg.quantizer.codebook) for p in prior)


def test_discrete_reset_replaces_only_unused_codes():
    reg = DiscreteRegularizer(2, DiscreteConfig(codebook_size=4))
    with torch.no_grad():
        reg.quantizer.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    h = torch.tensor([[0.1, 0.0], [0.9, 0.1], [0.0, 1.2]])
    reg(h)
    dead, rows = reg.reset_dead_codes(generator=torch.Generator().manual_seed(0))
    assert dead.tolist() == [3]
    assert any(torch.equal(rows[0], r) for r in h)
    assert int(reg.quantizer.usage.sum()) == 0  # counts restart after a reset


def test_unconstrained_latent_has_no_loss_and_no_prior():
    reg = UnconstrainedLatent(3)
    out = reg(torch.ones(2, 3))
    assert out.losses == {} and torch.equal(out.z, torch.ones(2, 3))
    with pytest.raises(ValueError, match="no prior"):
        reg.sample_prior(2)


def test_names_say_unconstrained_latent_or_no_latent():
    """``unconstrained``: a latent without a regulariser; ``deterministic``: no latent at all. The old
    name ``none`` (a latent, unconstrained) is still accepted and means ``unconstrained``."""
    assert "none" not in REGULARIZERS and "none" in REG_CHOICES
    old = ModelConfig(reg="none")
    assert old.reg == "unconstrained" and old == ModelConfig(reg="unconstrained")
    reg = build_regularizer(old)
    assert isinstance(reg, UnconstrainedLatent) and reg.kind == "unconstrained"
    assert build_regularizer(ModelConfig(reg="deterministic")) is None
    with pytest.raises(ValueError, match="reg='nothing'"):
        ModelConfig(reg="nothing")

"""The information-content regularisers L_z of PAPER.md section 2, and the two baselines.

Each maps the IDM output h: (M, out_dim) to latents z: (M, D) plus weighted loss terms (what is
added to the prediction loss) and unweighted metrics for logging, and can sample its prior.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lam_fast.models.config import DiscreteConfig, ModelConfig, NoisyConfig, SparseConfig
from lam_fast.nn import VectorQuantizer
from lam_fast.ops import vq_lookup

_VAR_EPS = 1e-4  # inside sqrt(Var + eps) of the variance hinge, as in VICReg


class RegOutput(NamedTuple):
    z: torch.Tensor
    losses: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor]


class LatentRegularizer(nn.Module):
    kind: str = ""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def idm_out_dim(self) -> int:
        return self.latent_dim

    def infer(self, h: torch.Tensor) -> torch.Tensor:
        """Deterministic latent for evaluation/planning."""
        return h

    def sample_prior(self, num: int, *, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        raise NotImplementedError


class UnconstrainedLatent(LatentRegularizer):
    """A continuous z with no regulariser (the ``unconstrained`` baseline, formerly ``none``): maximal
    capacity, no loss, no prior. Not to be confused with ``deterministic``, which has no latent."""

    kind = "unconstrained"

    def forward(self, h: torch.Tensor) -> RegOutput:
        return RegOutput(h, {}, {"z/abs_mean": h.detach().abs().mean()})

    def sample_prior(self, num, *, generator=None, device="cpu"):
        raise ValueError("the unconstrained latent has no regulariser, so it defines no prior to sample from")


def sparse_energy(z: torch.Tensor, cfg: SparseConfig) -> torch.Tensor:
    """E(z) = lambda_l2 * max(sqrt(D) - ||z||_2^2, 0) + lambda_l1 * ||z||_1, per row: (M, D) -> (M,)."""
    d = z.shape[-1]
    norm_sq = (z * z).sum(-1)
    return cfg.lambda_l2 * F.relu(math.sqrt(d) - norm_sq) + cfg.lambda_l1 * z.abs().sum(-1)


def vcm_terms(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unweighted VCM terms of a batch z: (M, D), M >= 2.

    variance: (1/D) sum_d max(1 - sqrt(Var(z[:, d]) + 1e-4), 0)   (unbiased variance)
    covariance: 1/(D(D-1)) sum_{i != j} Cov(z)_ij^2
    mean: (1/D) sum_d |mean(z[:, d])|   (our reading of the printed mean term: |mean| per dimension,
    which pushes each dimension's batch mean to zero without squaring away small offsets)
    """
    m, d = z.shape
    if m < 2:
        raise ValueError(f"the VCM regulariser needs at least 2 latents in a batch, got {m}")
    mean = z.mean(0)
    centered = z - mean
    var = centered.pow(2).sum(0) / (m - 1)
    cov = centered.T @ centered / (m - 1)
    off_diag = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return {
        "variance": F.relu(1 - torch.sqrt(var + _VAR_EPS)).mean(),
        "covariance": off_diag / (d * (d - 1)) if d > 1 else off_diag * 0,
        "mean": mean.abs().mean(),
    }


class SparseRegularizer(LatentRegularizer):
    """Energy-based sparse latents: L(Z) = VCM(Z) + (1/N) sum_i E(Z_i); prior sampled by Langevin on E."""

    kind = "sparse"

    def __init__(self, latent_dim: int, cfg: SparseConfig):
        super().__init__(latent_dim)
        self.cfg = cfg

    def forward(self, h: torch.Tensor) -> RegOutput:
        z, cfg = h, self.cfg
        vcm = vcm_terms(z.float())
        energy = sparse_energy(z.float(), cfg).mean()
        losses = {
            "reg/variance": cfg.lambda_var * vcm["variance"],
            "reg/covariance": cfg.lambda_cov * vcm["covariance"],
            "reg/mean": cfg.lambda_mean * vcm["mean"],
            "reg/energy": energy,
        }
        metrics = {
            "z/l1": z.detach().abs().sum(-1).mean(),
            "z/sparsity": (z.detach().abs() < 1e-2).float().mean(),
        }
        return RegOutput(z, losses, metrics)

    def energy_grad(self, z: torch.Tensor) -> torch.Tensor:
        """dE/dz (sub-gradient sign(0) = 0 for the L1 term)."""
        d = z.shape[-1]
        inside = ((z * z).sum(-1, keepdim=True) < math.sqrt(d)).to(z.dtype)
        return self.cfg.lambda_l2 * inside * (-2 * z) + self.cfg.lambda_l1 * torch.sign(z)

    def sample_prior(self, num, *, generator=None, device="cpu", steps: int | None = None):
        """Langevin dynamics z <- z - (a/2) dE/dz + eps, eps ~ N(0, a I), from z ~ N(0, I)."""
        a = self.cfg.langevin_step_size
        z = torch.randn(num, self.latent_dim, generator=generator, device=device)
        for _ in range(self.cfg.langevin_steps if steps is None else steps):
            noise = torch.randn(z.shape, generator=generator, device=device) * math.sqrt(a)
            z = z - 0.5 * a * self.energy_grad(z) + noise
        return z


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over dimensions: (M, D) -> (M,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


class NoisyRegularizer(LatentRegularizer):
    """VAE-like latents: z = mean + exp(logvar / 2) * eps while training, the mean at inference;
    loss beta * KL(q(z | s_t, s_t+1) || N(0, I)), averaged over latents."""

    kind = "noisy"

    def __init__(self, latent_dim: int, cfg: NoisyConfig):
        super().__init__(latent_dim)
        self.cfg = cfg

    @property
    def idm_out_dim(self) -> int:
        return 2 * self.latent_dim

    def _split(self, h: torch.Tensor):
        mean, logvar = h.chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(self, h: torch.Tensor) -> RegOutput:
        mean, logvar = self._split(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if self.training else mean
        kl = gaussian_kl(mean.float(), logvar.float()).mean()
        return RegOutput(z, {"reg/kl": self.cfg.beta * kl}, {"z/kl": kl.detach(), "z/std": (0.5 * logvar).exp().mean().detach()})

    def infer(self, h):
        return self._split(h)[0]

    def sample_prior(self, num, *, generator=None, device="cpu"):
        return torch.randn(num, self.latent_dim, generator=generator, device=device)


class DiscreteRegularizer(LatentRegularizer):
    """VQ-VAE latents: straight-through quantisation, codebook + beta_commit * commitment loss
    (beta_commit = 0.25), and reset of codes unused since the last reset (see reset_dead_codes)."""

    kind = "discrete"

    def __init__(self, latent_dim: int, cfg: DiscreteConfig, *, backend: str = "auto"):
        super().__init__(latent_dim)
        self.cfg = cfg
        self.quantizer = VectorQuantizer(cfg.codebook_size, latent_dim, backend=backend)
        self._last_inputs: torch.Tensor | None = None

    def forward(self, h: torch.Tensor) -> RegOutput:
        out = self.quantizer(h)
        if self.training:
            self._last_inputs = h.detach()
        counts = torch.bincount(out.indices, minlength=self.quantizer.num_codes).float()
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        losses = {"reg/vq_codebook": out.codebook_loss, "reg/vq_commitment": self.cfg.commitment * out.commitment_loss}
        metrics = {"vq/perplexity": perplexity, "vq/batch_usage": (counts > 0).float().mean()}
        return RegOutput(out.quantized, losses, metrics)

    def infer(self, h):
        codebook = self.quantizer.codebook
        indices = vq_lookup(h, codebook.to(h.dtype), backend=self.quantizer.backend).indices
        return codebook[indices].to(h.dtype)

    def sample_prior(self, num, *, generator=None, device="cpu"):
        idx = torch.randint(self.quantizer.num_codes, (num,), generator=generator, device=device)
        return self.quantizer.codebook.detach()[idx]

    @torch.no_grad()
    def reset_dead_codes(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick new values for codes unused since the last reset; zero the usage counts.

        Dead codes are replaced by IDM outputs of the latest training batch (drawn with replacement).
        Under torch.distributed the usage counts are summed over ranks and rank 0's choice is
        broadcast, so every rank applies the same update. Returns (indices, new rows); the caller
        writes them into the codebook (through the optimizer's master copy when there is one).
        """
        usage = self.quantizer.usage.clone()
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(usage)
        dead = torch.nonzero(usage == 0).flatten()
        self.quantizer.usage.zero_()
        source = self._last_inputs
        if dead.numel() == 0 or source is None:
            return dead, self.quantizer.codebook.new_empty(0, self.latent_dim)
        pick = torch.randint(source.shape[0], (dead.numel(),), generator=generator, device=source.device)
        rows = source[pick].to(self.quantizer.codebook.dtype).contiguous()
        if distributed:
            dist.broadcast(rows, src=0)
        return dead, rows


def build_regularizer(cfg: ModelConfig) -> LatentRegularizer | None:
    """The regulariser for ``cfg.reg``: for ``unconstrained`` the pass-through
    :class:`UnconstrainedLatent`; None only for ``deterministic``, which has no latent at all."""
    if cfg.reg == "sparse":
        return SparseRegularizer(cfg.latent_dim, cfg.sparse)
    if cfg.reg == "noisy":
        return NoisyRegularizer(cfg.latent_dim, cfg.noisy)
    if cfg.reg == "discrete":
        return DiscreteRegularizer(cfg.latent_dim, cfg.discrete, backend=cfg.backend)
    if cfg.reg == "unconstrained":
        return UnconstrainedLatent(cfg.latent_dim)
    if cfg.reg == "deterministic":
        return None
    raise ValueError(f"no regulariser named {cfg.reg!r}")

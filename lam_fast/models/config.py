"""Frozen model configurations and the explicit presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

#: The latent regularisers of PAPER.md section 2, then the two baselines: ``unconstrained``, a latent
#: with no regulariser (maximal capacity), and ``deterministic``, no latent at all.
REGULARIZERS = ("sparse", "noisy", "discrete", "unconstrained", "deterministic")
#: Former names, still accepted (``--reg none``, the config.yaml of older runs): ``none`` said "no
#: regulariser" but read as "no latent", which is ``deterministic``.
REG_ALIASES = {"none": "unconstrained"}
#: What ``--reg`` and a config file accept.
REG_CHOICES = REGULARIZERS + tuple(REG_ALIASES)


def canonical_reg(name: str) -> str:
    """The current name of regulariser ``name`` (a former name mapped, any other returned as is)."""
    return REG_ALIASES.get(name, name)


@dataclass(frozen=True)
class TransformerConfig:
    depth: int
    width: int
    heads: int
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if min(self.depth, self.width, self.heads) < 1 or self.width % self.heads:
            raise ValueError(f"invalid transformer config {self}: positive sizes, width divisible by heads")


#: Predictor presets (depth x width x heads). L is the paper's ViT-L predictor; tiny trains on 2 CPU
#: cores; S/B/H/G follow the ViT family (G is ViT-g: 1408 wide, 16 heads of 88).
PREDICTOR_PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(4, 128, 4),
    "S": TransformerConfig(12, 384, 6),
    "B": TransformerConfig(12, 768, 12),
    "L": TransformerConfig(24, 1024, 16),
    "H": TransformerConfig(32, 1280, 16),
    "G": TransformerConfig(40, 1408, 16),
}

#: IDM per preset (the paper leaves it open): a few pre-norm blocks, a quarter of the predictor depth.
IDM_PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(2, 128, 4),
    "S": TransformerConfig(3, 384, 6),
    "B": TransformerConfig(3, 768, 12),
    "L": TransformerConfig(6, 1024, 16),
    "H": TransformerConfig(6, 1024, 16),
    "G": TransformerConfig(6, 1024, 16),
}


def _check_non_negative(cfg) -> None:
    """Every number of ``cfg`` finite and >= 0 (the regularisers' weights, sizes and step counts)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{type(cfg).__name__}.{f.name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class SparseConfig:
    """Energy + VCM weights (stated in the paper) and the capacity knob lambda_l1."""

    lambda_l1: float = 0.05
    lambda_l2: float = 1.0
    lambda_var: float = 0.1
    lambda_cov: float = 0.001
    lambda_mean: float = 0.1
    langevin_steps: int = 100
    langevin_step_size: float = 0.01

    def __post_init__(self):
        _check_non_negative(self)


@dataclass(frozen=True)
class NoisyConfig:
    beta: float = 1e-4

    def __post_init__(self):
        _check_non_negative(self)


@dataclass(frozen=True)
class DiscreteConfig:
    codebook_size: int = 1024
    commitment: float = 0.25
    #: reset codes unused since the last reset every this many training videos (the paper: 300k)
    reset_every_videos: int = 300_000

    def __post_init__(self):
        _check_non_negative(self)
        if self.codebook_size < 1 or self.reset_every_videos < 1:
            raise ValueError(f"codebook_size and reset_every_videos must be >= 1, got {self}")


@dataclass(frozen=True)
class ModelConfig:
    reg: str = "sparse"
    preset: str = "tiny"
    latent_dim: int = 128
    sparse: SparseConfig = field(default_factory=SparseConfig)
    noisy: NoisyConfig = field(default_factory=NoisyConfig)
    discrete: DiscreteConfig = field(default_factory=DiscreteConfig)
    rope_base: float = 10000.0
    #: predict the change s_{t+1} - s_t (our choice; the paper predicts s_{t+1}): with the zero-initialised
    #: output layer the untrained model is exactly the "no change" predictor, which small runs need
    residual: bool = True
    backend: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "reg", canonical_reg(self.reg))
        if self.reg not in REGULARIZERS:
            raise ValueError(f"reg={self.reg!r} is not one of {REGULARIZERS}")
        if self.preset not in PREDICTOR_PRESETS:
            raise ValueError(f"preset={self.preset!r} is not one of {tuple(PREDICTOR_PRESETS)}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {self.latent_dim}")

    @property
    def predictor(self) -> TransformerConfig:
        return PREDICTOR_PRESETS[self.preset]

    @property
    def idm(self) -> TransformerConfig:
        return IDM_PRESETS[self.preset]

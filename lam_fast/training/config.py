"""Strict training configuration: defaults < YAML file < command-line flags."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from lam_fast.errors import UserError
from lam_fast.io import write_text_atomic
from lam_fast.models.config import (
    PREDICTOR_PRESETS,
    REGULARIZERS,
    DiscreteConfig,
    ModelConfig,
    NoisyConfig,
    SparseConfig,
    canonical_reg,
)
from lam_fast.models.encoders import ENCODER_OPTIONS, ENCODERS, encoder_options, normalize_encoder_options


class ConfigError(UserError, ValueError):
    """A configuration key or value is invalid; the message names it."""


#: config key -> the encoder option it sets (lam_fast.models.encoders.ENCODER_OPTIONS)
_ENCODER_OPTION_KEYS = {"patch_size": "patch_size", "encoder_model": "model"}


@dataclass(frozen=True)
class TrainConfig:
    # model
    reg: str = "sparse"
    preset: str = "tiny"
    latent_dim: int = 128
    lambda_l1: float = SparseConfig.lambda_l1
    beta: float = NoisyConfig.beta
    codebook_size: int = DiscreteConfig.codebook_size
    vq_reset_every: int = DiscreteConfig.reset_every_videos
    residual: bool = True
    backend: str = "auto"
    # encoder. patch_size applies to pixels only, encoder_model to vjepa2 only: given with another
    # encoder they are an error (see make_config for old files). None = the encoder's default;
    # for pixels the default patch size is filled in (8), so its config.yaml is what it always was.
    encoder: str = "pixels"
    encoder_model: str | None = None
    patch_size: int | None = None
    image_size: int = 64
    # data
    data: str | None = None
    decoder: str = "auto"
    num_frames: int = 16
    fps: float = 4.0
    num_workers: int = 2  # DataLoader decoding processes: decoding overlaps the training step
    # optimisation (PAPER.md section 3)
    steps: int = 1000
    batch_size: int = 8
    muon_lr: float = 0.02
    adamw_lr: float = 6.25e-4
    weight_decay: float = 0.04
    warmup_frac: float = 0.1
    grad_clip: float = 1.0
    # run
    out: str = "runs/default"
    seed: int = 0
    save_every: int = 100
    keep_last: int = 3
    log_every: int = 10
    engine: str = "auto"
    zero_stage: int = 0
    deepspeed_config: str | None = None
    precision: str = "auto"

    def __post_init__(self):
        if self.patch_size is None and "patch_size" in ENCODER_OPTIONS.get(self.encoder, {}):
            object.__setattr__(self, "patch_size", ENCODER_OPTIONS[self.encoder]["patch_size"])
        object.__setattr__(self, "reg", canonical_reg(self.reg))  # "none" of older runs: "unconstrained"
        checks = {
            "reg": self.reg in REGULARIZERS,
            "preset": self.preset in PREDICTOR_PRESETS,
            "encoder": self.encoder in ENCODERS,
            "engine": self.engine in ("auto", "deepspeed", "local"),
            "decoder": self.decoder in ("auto", "pyav", "opencv", "dali"),
            "zero_stage": self.zero_stage in (0, 1, 2, 3),
            "precision": self.precision in ("auto", "fp32", "bf16"),
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "num_frames": self.num_frames >= 2,
            "fps": self.fps > 0,
            "save_every": self.save_every >= 1,
            "keep_last": self.keep_last >= 1,
            "log_every": self.log_every >= 1,
            "warmup_frac": 0 <= self.warmup_frac < 1,
            "num_workers": self.num_workers >= 0,
            "vq_reset_every": self.vq_reset_every >= 1,
            "latent_dim": self.latent_dim >= 1,
            "image_size": self.image_size >= 1,
            "patch_size": self.patch_size is None or self.patch_size >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid value for config key {key!r}: {getattr(self, key)!r}")
        for key, option in _ENCODER_OPTION_KEYS.items():
            value = getattr(self, key)
            if value is not None and option not in ENCODER_OPTIONS[self.encoder]:
                takers = [name for name in ENCODERS if option in ENCODER_OPTIONS[name]]
                raise ConfigError(f"config key {key!r} ({value!r}) does not apply to encoder {self.encoder!r}; "
                                  f"only to {', '.join(takers)}")

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            reg=self.reg,
            preset=self.preset,
            latent_dim=self.latent_dim,
            sparse=SparseConfig(lambda_l1=self.lambda_l1),
            noisy=NoisyConfig(beta=self.beta),
            discrete=DiscreteConfig(codebook_size=self.codebook_size, reset_every_videos=self.vq_reset_every),
            residual=self.residual,
            backend=self.backend,
        )

    def encoder_options(self) -> dict:
        """The encoder's options with its defaults filled in (``{"patch_size": 8}`` for pixels): what
        ``build_encoder(cfg.encoder, cfg.image_size, **options)`` takes and a state cache records."""
        return normalize_encoder_options(
            self.encoder, encoder_options(self.encoder, patch_size=self.patch_size, model=self.encoder_model))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_HINTS = typing.get_type_hints(TrainConfig)

#: what every config.yaml written before encoder options were strict holds for patch_size
_OLD_DEFAULT_PATCH_SIZE = 8


def _coerce(key: str, value):
    hint = _HINTS[key]
    optional = type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key!r} cannot be null")
    if (base is bool) != isinstance(value, bool):
        raise ConfigError(f"config key {key!r} expects {base.__name__}, got {value!r}")
    if base is bool:
        return value
    if isinstance(value, (list, dict)):
        raise ConfigError(f"config key {key!r} expects {base.__name__}, got {value!r}")
    try:
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r} expects {base.__name__}, got {value!r}") from None


def make_config(yaml_path: str | Path | None = None, **overrides) -> TrainConfig:
    """Build a TrainConfig from an optional YAML file and keyword overrides (None = not given).

    Unknown keys raise :class:`ConfigError` naming the key and the file they came from.

    Old run directories: until encoder options became strict, ``patch_size`` defaulted to 8 and
    every saved config.yaml holds ``patch_size: 8``, whatever the encoder. A file's
    ``patch_size: 8`` with a non-pixels encoder is therefore read as "not given" (None), so those
    runs still load and resume; any other value, or 8 given as an override, is an error there.
    """
    valid = {f.name for f in fields(TrainConfig)}
    values: dict = {}
    if yaml_path is not None:
        text = Path(yaml_path).read_text()
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: the config must be a mapping of keys to values")
        for key, value in loaded.items():
            if key not in valid:
                raise ConfigError(f"unknown config key {key!r} in {yaml_path}; valid keys: {', '.join(sorted(valid))}")
            values[key] = _coerce(key, value)
    from_file = dict(values)
    for key, value in overrides.items():
        if key not in valid:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(valid))}")
        if value is not None:
            values[key] = _coerce(key, value)
    old_default = from_file.get("patch_size") == _OLD_DEFAULT_PATCH_SIZE and overrides.get("patch_size") is None
    if old_default and values.get("encoder", TrainConfig.encoder) != "pixels":
        values["patch_size"] = None
    return TrainConfig(**values)


def save_config(cfg: TrainConfig, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=True))

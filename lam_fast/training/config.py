"""Strict training configuration: defaults < YAML file < command-line flags."""

from __future__ import annotations

import dataclasses
import math
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


#: Largest learning rate accepted. Muon's update is lr times an orthogonalised matrix (entries of
#: order 1) and AdamW's about lr per entry: rates in the tens already destroy any model, and values
#: near float32's range (3e38) overflow in the optimizer. 10 leaves every sane schedule room.
MAX_LR = 10.0

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
            "codebook_size": self.codebook_size >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid value for config key {key!r}: {getattr(self, key)!r}")
        self._check_numbers()
        self._check_image_size()
        for key, option in _ENCODER_OPTION_KEYS.items():
            value = getattr(self, key)
            if value is not None and option not in ENCODER_OPTIONS[self.encoder]:
                takers = [name for name in ENCODERS if option in ENCODER_OPTIONS[name]]
                raise ConfigError(f"config key {key!r} ({value!r}) does not apply to encoder {self.encoder!r}; "
                                  f"only to {', '.join(takers)}")

    def _check_numbers(self) -> None:
        """Finite, in range: a negative capacity knob would make the loss negative (the run
        "improves" by growing z), and a learning rate beyond :data:`MAX_LR` overflows float32
        inside Muon's update instead of failing here."""
        rules = {
            "lambda_l1": ("a finite number >= 0", lambda v: v >= 0),
            "beta": ("a finite number >= 0", lambda v: v >= 0),
            "weight_decay": ("a finite number >= 0", lambda v: v >= 0),
            "grad_clip": ("a finite number > 0", lambda v: v > 0),
            "fps": ("a finite number > 0", lambda v: v > 0),
            "muon_lr": (f"a finite number in (0, {MAX_LR:g}]", lambda v: 0 < v <= MAX_LR),
            "adamw_lr": (f"a finite number in (0, {MAX_LR:g}]", lambda v: 0 < v <= MAX_LR),
        }
        for key, (rule, ok) in rules.items():
            value = getattr(self, key)
            if not math.isfinite(value) or not ok(value):
                raise ConfigError(f"config key {key!r} must be {rule}, got {value!r}")

    def _check_image_size(self) -> None:
        """The image must tile into the encoder's patches (pixels) or its stage's stride (effnet);
        vjepa2's patch is part of its pretrained config and is checked when it is built."""
        if self.encoder == "pixels" and self.image_size % self.patch_size:
            raise ConfigError(f"config key 'image_size' ({self.image_size}) must be divisible by 'patch_size' "
                              f"({self.patch_size}) for the pixels encoder")
        if self.encoder == "effnet":
            from lam_fast.models import _effnet_lite

            stride = _effnet_lite.stage_stride(ENCODER_OPTIONS["effnet"]["stage"])
            if self.image_size % stride:
                raise ConfigError(f"config key 'image_size' ({self.image_size}) must be divisible by {stride}, "
                                  "the stride of the effnet encoder's feature stage")

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


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (yaml.safe_load keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate config key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(path: str | Path):
    """The YAML document of a config file; ConfigError naming the file for a missing or unreadable
    file, a syntax error (with its line), a duplicate key or a tag YAML's safe loader refuses."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader) or {}
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: YAML error{where}: {problem}") from None


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
        loaded = _load_yaml(yaml_path)
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

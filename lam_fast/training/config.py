"""Strict training configuration: defaults < YAML file < command-line flags."""

from __future__ import annotations

import dataclasses
import math
import numbers
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
from lam_fast.models.encoders import (
    ENCODER_OPTIONS,
    ENCODERS,
    encoder_geometry,
    encoder_options,
    normalize_encoder_options,
)
from lam_fast.ops._dispatch import BACKEND_NAMES


class ConfigError(UserError, ValueError):
    """A configuration key or value is invalid; the message names it."""


#: config key -> the encoder option it sets (lam_fast.models.encoders.ENCODER_OPTIONS)
_ENCODER_OPTION_KEYS = {"patch_size": "patch_size", "encoder_model": "model"}

#: The largest learning rate accepted (muon_lr, adamw_lr). Both optimisers move a weight by about
#: lr per step (Muon: an orthogonalised update, entries of order 1, times sqrt(max(1, rows/cols));
#: AdamW: a normalised step of about one per element) while the weights of every preset are far
#: below one: rates in the tens destroy any model in a step, so 10 leaves every sane schedule room
#: and refuses only typos. It also keeps the optimisers' float32 arithmetic finite: 3e38 made Muon's
#: shape-adjusted lr overflow float32 ("value cannot be converted to type float without overflow").
MAX_LR = 10.0
#: torch.manual_seed takes seeds below 2**64 and the loop adds 1_000_003 * rank; numpy's generators
#: (the clip sampler) take non-negative seeds only
_SEED_LIMIT = 2**63

#: key -> the values it accepts
_CHOICES: dict[str, tuple] = {
    "reg": REGULARIZERS,
    "preset": tuple(PREDICTOR_PRESETS),
    "encoder": ENCODERS,
    "engine": ("auto", "deepspeed", "local"),
    "decoder": ("auto", "pyav", "opencv", "dali"),
    "zero_stage": (0, 1, 2, 3),
    "precision": ("auto", "fp32", "bf16"),
    "backend": ("auto", *BACKEND_NAMES),
}
#: int key -> its least value (patch_size: when given; seed also below _SEED_LIMIT)
_INT_MIN = {"steps": 1, "batch_size": 1, "num_frames": 2, "save_every": 1, "keep_last": 1, "log_every": 1,
            "num_workers": 0, "vq_reset_every": 1, "latent_dim": 1, "codebook_size": 1, "image_size": 1,
            "patch_size": 1, "seed": 0}
#: float key -> (rule, its text); every float must also be finite
_FLOAT_RULES = {
    "lambda_l1": (lambda x: x >= 0, ">= 0"),
    "beta": (lambda x: x >= 0, ">= 0"),
    "fps": (lambda x: x > 0, "> 0"),
    "muon_lr": (lambda x: 0 < x <= MAX_LR, f"> 0 and <= {MAX_LR}"),
    "adamw_lr": (lambda x: 0 < x <= MAX_LR, f"> 0 and <= {MAX_LR}"),
    "weight_decay": (lambda x: x >= 0, ">= 0"),
    "warmup_frac": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "grad_clip": (lambda x: x > 0, "> 0"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Every field is checked at construction (:class:`ConfigError` naming the key and the rule):
    types, ranges, choices, and the rules between keys (the encoder's image and frame multiples,
    enough latents for the sparse regulariser's batch statistics, weight decay below 1 / lr)."""

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
    grad_clip: float = 1.0  # max total gradient norm
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
        _check_types(self)
        if self.patch_size is None and "patch_size" in ENCODER_OPTIONS.get(self.encoder, {}):
            object.__setattr__(self, "patch_size", ENCODER_OPTIONS[self.encoder]["patch_size"])
        object.__setattr__(self, "reg", canonical_reg(self.reg))  # "none" of older runs: "unconstrained"
        _check_values(self)
        _check_encoder(self)
        _check_between_keys(self)

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


def _base_type(key: str) -> tuple[type, bool]:
    """(the type of config key ``key``, whether it may be None)."""
    hint = _HINTS[key]
    args = typing.get_args(hint)
    return next((a for a in args if a is not type(None)), hint), type(None) in args


def _type_error(key: str, value) -> ConfigError:
    return ConfigError(f"config key {key!r} expects {_base_type(key)[0].__name__}, got {value!r}")


def _check_types(cfg: TrainConfig) -> None:
    """Every field of the type its annotation says (ints and floats of any numeric kind converted;
    a bool is no number, a number no bool); None only where the annotation allows it."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        base, optional = _base_type(f.name)
        if value is None:
            if optional:
                continue
            raise ConfigError(f"config key {f.name!r} cannot be null")
        if (base is bool) != isinstance(value, bool):
            raise _type_error(f.name, value)
        if base is int and isinstance(value, numbers.Integral):
            object.__setattr__(cfg, f.name, int(value))
        elif base is float and isinstance(value, numbers.Real):
            object.__setattr__(cfg, f.name, float(value))
        elif not isinstance(value, base):
            raise _type_error(f.name, value)


def _invalid(key: str, value, rule: str) -> ConfigError:
    return ConfigError(f"invalid value for config key {key!r}: {value!r} (expected {rule})")


def _check_values(cfg: TrainConfig) -> None:
    """Each key on its own: choices, integer minimums, finite floats in range, non-empty paths."""
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise _invalid(key, getattr(cfg, key), "one of " + ", ".join(map(str, choices)))
    for key, least in _INT_MIN.items():
        value = getattr(cfg, key)
        if value is not None and not least <= value < (_SEED_LIMIT if key == "seed" else math.inf):
            raise _invalid(key, value, f"an integer >= {least}" + (" and < 2**63" if key == "seed" else ""))
    for key, (rule, text) in _FLOAT_RULES.items():
        value = getattr(cfg, key)
        if not (math.isfinite(value) and rule(value)):
            raise _invalid(key, value, f"a finite number {text}")
    for key in ("out", "data", "encoder_model", "deepspeed_config"):
        if getattr(cfg, key) is not None and not getattr(cfg, key).strip():
            raise _invalid(key, getattr(cfg, key), "a non-empty path")


def _check_encoder(cfg: TrainConfig) -> None:
    """Options only for the encoder that takes them; image_size and num_frames multiples of what the
    encoder needs (:func:`lam_fast.models.encoders.encoder_geometry`), at least two states a clip."""
    for key, option in _ENCODER_OPTION_KEYS.items():
        value = getattr(cfg, key)
        if value is not None and option not in ENCODER_OPTIONS[cfg.encoder]:
            takers = [name for name in ENCODERS if option in ENCODER_OPTIONS[name]]
            raise ConfigError(f"config key {key!r} ({value!r}) does not apply to encoder {cfg.encoder!r}; "
                              f"only to {', '.join(takers)}")
    geometry = encoder_geometry(cfg.encoder, cfg.encoder_options())
    if geometry is None:  # a vjepa2 model known only once loaded: building the encoder checks
        return
    multiple, per_state = geometry
    what = {"pixels": "patch_size", "effnet": "feature stride", "vjepa2": "patch size"}[cfg.encoder]
    if cfg.image_size % multiple:
        raise _invalid("image_size", cfg.image_size, f"a multiple of {multiple}, the {what} of encoder {cfg.encoder!r}")
    if cfg.num_frames % per_state or cfg.num_frames < 2 * per_state:
        raise _invalid("num_frames", cfg.num_frames, f"a multiple of {per_state} and at least {2 * per_state}: "
                       f"encoder {cfg.encoder!r} makes a state of {per_state} frames, a clip needs two states")


def _check_between_keys(cfg: TrainConfig) -> None:
    """The sparse regulariser's batch statistics and the optimisers' weight decay."""
    geometry = encoder_geometry(cfg.encoder, cfg.encoder_options())
    if cfg.reg == "sparse" and geometry is not None:
        latents = cfg.batch_size * (cfg.num_frames // geometry[1] - 1)
        if latents < 2:  # VCM: a variance over the batch (models/regularizers.py)
            raise ConfigError(f"invalid value for config key 'batch_size': {cfg.batch_size} with num_frames "
                              f"{cfg.num_frames} (reg 'sparse' needs at least 2 latents a step on each rank "
                              f"for its variance term; this gives {latents})")
    for key in ("muon_lr", "adamw_lr"):
        # decoupled weight decay multiplies every weight by 1 - lr * weight_decay each step
        if getattr(cfg, key) * cfg.weight_decay >= 1:
            raise ConfigError(f"invalid value for config key 'weight_decay': {cfg.weight_decay} with {key} "
                              f"{getattr(cfg, key)} (expected {key} * weight_decay < 1: each step scales "
                              "every weight by 1 - lr * weight_decay)")


def _coerce(key: str, value):
    """A YAML or keyword value as config key ``key``'s type: numbers from numeric strings
    (PyYAML reads ``1e-4`` as a string), no bool for a number nor a number for a bool."""
    base, optional = _base_type(key)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key!r} cannot be null")
    if (base is bool) != isinstance(value, bool):
        raise _type_error(key, value)
    if base is bool:
        return value
    if not isinstance(value, (str, int, float)):
        raise _type_error(key, value)
    try:
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return base(value)
    except (TypeError, ValueError, OverflowError):
        raise _type_error(key, value) from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int, first: int):
        super().__init__(f"line {line}: duplicate key {key!r} (first on line {first})")


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # a merge (<<) may repeat keys; a non-scalar key is unhashable (PyYAML says)
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: PyYAML's construct_mapping says so
                    continue
                if first is not None:
                    raise _DuplicateKey(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str | Path) -> dict:
    """The mapping of config file ``path``; ConfigError naming the file (and line) when it is
    missing, unreadable, not YAML, has a key twice, or is not a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read it ({error.strerror or error})") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as error:
        raise ConfigError(f"config file {path}, {error}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(part) for part in (error.context, error.problem) if part)
        raise ConfigError(f"config file {path}{where}: invalid YAML: {problem}") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as error:
        # PyYAML lets a few bad scalars through as Python errors (a date such as 2024-13-45)
        raise ConfigError(f"config file {path}: invalid YAML: {' '.join(str(error).split())}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: the config must be a mapping of keys to values")
    return loaded


def make_config(yaml_path: str | Path | None = None, **overrides) -> TrainConfig:
    """Build a TrainConfig from an optional YAML file and keyword overrides (None = not given).

    Raises :class:`ConfigError` (a :class:`lam_fast.errors.UserError`), naming the file, line or
    key, for anything wrong: a missing or unreadable file, a YAML syntax error, a key given twice,
    an unknown key, a value of the wrong type, and every rule of :class:`TrainConfig`.

    Old run directories: until encoder options became strict, ``patch_size`` defaulted to 8 and
    every saved config.yaml holds ``patch_size: 8``, whatever the encoder. A file's
    ``patch_size: 8`` with a non-pixels encoder is therefore read as "not given" (None), so those
    runs still load and resume; any other value, or 8 given as an override, is an error there.
    """
    valid = {f.name for f in fields(TrainConfig)}
    values: dict = {}
    if yaml_path is not None:
        for key, value in _read_yaml(yaml_path).items():
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

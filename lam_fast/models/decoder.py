"""Pixels from encoder states, to look at what a world model predicts.

- :class:`StateDecoder`: a small frame-causal ViT (the predictor's blocks: frame-wise AdaLN-zero
  with a learned constant conditioning, frame-causal attention with 3D RoPE, the same fused ops)
  from states (B, T, N, C) to frames (B, T * frames_per_state, 3, H, W) in [0, 1]. Each token
  emits its own ``frames_per_state x 3 x p x p`` patch (p = image_size / grid side), squashed
  into [0, 1] by a sigmoid, so outputs are always valid images and the loss has gradients
  everywhere (a clamp would have none outside [0, 1]). Decoded frame t sees states 0..t only.
- :func:`decode_to_pixels`: a trained decoder, or for the ``pixels`` encoder its exact inverse
  (no weights needed).
- training: :func:`lam_fast.training.decoder.fit_decoder` (this module has no training code).
- :func:`save_decoder` / :func:`load_decoder`: ``decoder.safetensors`` + ``decoder.json``, by
  default in ``RUN/decoder/`` (``lam-fast train-decoder``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lam_fast._moved import moved
from lam_fast.io import load_weights_with_meta, save_weights_with_meta
from lam_fast.models.config import TransformerConfig
from lam_fast.nn import AdaLNZeroBlock, FinalLayer
from lam_fast.ops import Rope3D

__all__ = [
    "DECODER_DIR",
    "DEFAULT_DECODER_CONFIG",
    "StateDecoder",
    "decode_to_pixels",
    "load_decoder",
    "pixel_encoder_inverse",
    "save_decoder",
]

# fit_decoder is training code: it lives in lam_fast.training.decoder; the old path still answers
__getattr__ = moved(__name__, {"fit_decoder": "lam_fast.training.decoder"})

#: where ``lam-fast train-decoder`` writes a run's decoder, relative to the run directory
DECODER_DIR = "decoder"
WEIGHTS_FILE = "decoder.safetensors"
META_FILE = "decoder.json"
#: small enough to train in minutes on a CPU
DEFAULT_DECODER_CONFIG = TransformerConfig(depth=2, width=128, heads=4)


class StateDecoder(nn.Module):
    """Frame-causal ViT decoder: states (B, T, N, state_dim) -> frames (B, T * frames_per_state, 3, H, W).

    ``grid`` is the encoder's (h, w) token grid (N = h * w, raster order) and ``image_size`` the
    square frame side; both grid sides must divide it. Output pixels are ``sigmoid`` of the head,
    hence in (0, 1). ``frames_per_state`` > 1 is for tubelet encoders (V-JEPA 2: 2 frames a state);
    each token then emits the patch of every frame of its tubelet.
    """

    def __init__(self, state_dim: int, grid: tuple[int, int], image_size: int,
                 cfg: TransformerConfig = DEFAULT_DECODER_CONFIG, *, frames_per_state: int = 1,
                 rope_base: float = 10000.0, backend: str = "auto"):
        super().__init__()
        grid = (int(grid[0]), int(grid[1]))
        if min(grid) < 1 or image_size % grid[0] or image_size % grid[1]:
            raise ValueError(f"grid {grid} must have positive sides that divide image_size={image_size}")
        if image_size // grid[0] != image_size // grid[1]:
            raise ValueError(f"grid {grid} gives non-square patches for image_size={image_size}")
        if frames_per_state < 1 or state_dim < 1:
            raise ValueError(f"state_dim and frames_per_state must be positive, got {state_dim}, {frames_per_state}")
        self.state_dim, self.grid, self.image_size, self.cfg = state_dim, grid, image_size, cfg
        self.frames_per_state, self.rope_base = frames_per_state, rope_base
        self.patch_size = image_size // grid[0]
        width = cfg.width
        self.embed = nn.Linear(state_dim, width)
        # deterministic conditioning, as the Predictor without a latent: one learned vector for every frame
        self.null_cond = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList(
            AdaLNZeroBlock(width, cfg.heads, cfg.mlp_ratio, backend=backend) for _ in range(cfg.depth)
        )
        self.final = FinalLayer(width, frames_per_state * 3 * self.patch_size**2, backend=backend)
        self.rope = Rope3D(width // cfg.heads, grid, rope_base)

    @property
    def frame_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def config_dict(self) -> dict[str, Any]:
        """What :func:`load_decoder` needs to rebuild this module."""
        return {"state_dim": self.state_dim, "grid": list(self.grid), "image_size": self.image_size,
                "frames_per_state": self.frames_per_state, "rope_base": self.rope_base,
                "config": asdict(self.cfg)}

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if states.dim() != 4 or states.shape[2] != self.frame_tokens or states.shape[3] != self.state_dim:
            raise ValueError(f"states must be (B, T, {self.frame_tokens}, {self.state_dim}), got {tuple(states.shape)}")
        b, t, n, c = states.shape
        x = self.embed(states.reshape(b, t * n, c))
        cond = self.null_cond.to(x.dtype).expand(b, t, -1)
        for block in self.blocks:
            x = block(x, cond, frame_tokens=n, rope=self.rope)
        patches = torch.sigmoid(self.final(x, cond, frame_tokens=n))  # (B, T*N, F*3*p*p)
        (gh, gw), p, f = self.grid, self.patch_size, self.frames_per_state
        patches = patches.reshape(b, t, gh, gw, f, 3, p, p).permute(0, 1, 4, 5, 2, 6, 3, 7)
        return patches.reshape(b, t * f, 3, gh * p, gw * p)


def pixel_encoder_inverse(states: torch.Tensor, encoder) -> torch.Tensor:
    """Exact inverse of :class:`~lam_fast.models.encoders.PixelEncoder`: states (B, T, N, 3 p^2) ->
    frames (B, T, 3, H, W), un-patchified, ImageNet normalisation undone, clamped to [0, 1]."""
    p, (gh, gw) = encoder.patch_size, encoder.grid
    if states.dim() != 4 or states.shape[2:] != (gh * gw, 3 * p * p):
        raise ValueError(f"states must be (B, T, {gh * gw}, {3 * p * p}), got {tuple(states.shape)}")
    b, t = states.shape[:2]
    x = states.float().reshape(b * t, gh, gw, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b * t, 3, gh * p, gw * p)
    x = x * encoder.std.to(x.device) + encoder.mean.to(x.device)
    return x.clamp(0.0, 1.0).reshape(b, t, 3, gh * p, gw * p)


def decode_to_pixels(states: torch.Tensor, encoder, decoder: StateDecoder | None = None) -> torch.Tensor:
    """States of ``encoder`` (B, T, N, C) -> frames (B, T * frames_per_state, 3, H, W) float in [0, 1].

    With ``decoder`` it runs the decoder (gradients are not disabled: wrap in ``torch.no_grad()``
    to visualise). Without one, only the ``pixels`` encoder can be inverted (exactly); any other
    encoder raises ValueError pointing at ``lam-fast train-decoder``.
    """
    if decoder is None:
        if getattr(encoder, "name", None) == "pixels":
            return pixel_encoder_inverse(states, encoder)
        raise ValueError(f"the {getattr(encoder, 'name', type(encoder).__name__)!r} encoder has no exact inverse: "
                         "train a decoder with `lam-fast train-decoder --ckpt RUN --data VIDEOS` and pass it "
                         "(load_decoder(RUN))")
    if (tuple(decoder.grid) != tuple(encoder.grid) or decoder.state_dim != encoder.dim
            or decoder.image_size != encoder.image_size or decoder.frames_per_state != encoder.frames_per_state):
        raise ValueError(f"decoder (grid {decoder.grid}, dim {decoder.state_dim}, {decoder.image_size}px, "
                         f"{decoder.frames_per_state} frames/state) does not match the {encoder.name} encoder "
                         f"(grid {encoder.grid}, dim {encoder.dim}, {encoder.image_size}px, "
                         f"{encoder.frames_per_state} frames/state)")
    param = next(decoder.parameters())
    return decoder(states.to(param.device, param.dtype)).float()


def save_decoder(decoder: StateDecoder, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``decoder.safetensors`` and ``decoder.json`` (the decoder's config plus ``extra``, e.g.
    ``{"metrics": {...}}``) into ``directory``. Each file is written to a temporary name and
    renamed into place, weights first, so ``decoder.json`` only ever names complete weights.
    Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {**(extra or {}), **decoder.config_dict()}
    save_weights_with_meta(directory / WEIGHTS_FILE, directory / META_FILE, decoder.state_dict(), meta)
    return directory


def find_decoder_dir(path: str | Path) -> Path | None:
    """``path`` itself if it holds a decoder, else ``path/decoder/`` if that does, else None."""
    path = Path(path)
    for candidate in (path, path / DECODER_DIR):
        if (candidate / META_FILE).is_file() and (candidate / WEIGHTS_FILE).is_file():
            return candidate
    return None


def load_decoder(path: str | Path, device: str | torch.device = "cpu", *, backend: str = "auto") -> StateDecoder | None:
    """Load the decoder in ``path`` (a decoder directory, or a run directory with ``decoder/``), in
    eval mode on ``device``; None when there is none. The metadata is in ``decoder.meta``."""
    directory = find_decoder_dir(path)
    if directory is None:
        return None
    tensors, meta = load_weights_with_meta(directory / WEIGHTS_FILE, directory / META_FILE)
    decoder = StateDecoder(meta["state_dim"], tuple(meta["grid"]), meta["image_size"],
                           TransformerConfig(**meta["config"]), frames_per_state=meta["frames_per_state"],
                           rope_base=meta["rope_base"], backend=backend)
    decoder.load_state_dict(tensors)
    decoder.meta = meta
    return decoder.to(device).eval()

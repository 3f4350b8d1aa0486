"""Open a training run directory: its checkpoint, resolved config, frozen encoder and model.

A *run* is the ``--out`` folder of ``lam-fast train`` (``config.yaml``, ``metrics.jsonl``,
``checkpoints/step_*/``, optionally ``decoder/``); a *checkpoint* is one ``step_*`` folder. Every
function here accepts either and reads only YAML, JSON and safetensors (nothing that can execute
code). This module sits above ``training`` (it needs the config schema and the checkpoint layout)
and below ``planning``, ``eval`` and ``cli``, which open runs through it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch

from lam_fast.training.checkpoint import CHECKPOINT_DIR, latest_checkpoint
from lam_fast.training.config import TrainConfig, make_config

MODEL_FILE = "model.safetensors"


class Run(NamedTuple):
    """A loaded run: unpack as ``config, encoder, model = load_run(path)``."""

    config: TrainConfig
    encoder: torch.nn.Module
    model: torch.nn.Module


def checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder of ``path``: ``path`` itself when it holds ``model.safetensors``, else
    the run's latest checkpoint. FileNotFoundError naming ``path`` when there is none."""
    path = Path(path)
    directory = path if (path / MODEL_FILE).is_file() else latest_checkpoint(path)
    if directory is None:
        raise FileNotFoundError(f"no checkpoint in {path} (expected {MODEL_FILE} or {CHECKPOINT_DIR}/)")
    return directory


def run_config(path: str | os.PathLike[str]) -> TrainConfig:
    """The resolved :class:`TrainConfig` a run (its latest checkpoint) or a checkpoint was trained with."""
    return make_config(checkpoint_dir(path) / "config.yaml")


def load_run(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Run:
    """Rebuild a trained run: ``(config, encoder, model)``.

    ``model`` is the :class:`~lam_fast.models.LatentActionWorldModel` in eval mode with the saved
    weights, ``encoder`` the frozen encoder it was trained on (both on ``device``), ``config`` the
    resolved :class:`TrainConfig`.
    """
    from safetensors.torch import load_file

    from lam_fast.models import LatentActionWorldModel
    from lam_fast.models.encoders import build_encoder

    directory = checkpoint_dir(path)
    cfg = make_config(directory / "config.yaml")
    encoder = build_encoder(cfg.encoder, cfg.image_size, **cfg.encoder_options()).to(device)
    model = LatentActionWorldModel(cfg.model_config(), state_dim=encoder.dim, grid=encoder.grid)
    model.load_state_dict(load_file(str(directory / MODEL_FILE)))
    return Run(cfg, encoder, model.to(device).eval())


def load_world_model(path: str | os.PathLike[str], device: str | torch.device = "cpu"):
    """``(model, encoder, config)``: :func:`load_run` in the order of the former
    ``lam_fast.training.checkpoint.load_world_model`` (kept so existing code keeps working)."""
    config, encoder, model = load_run(path, device)
    return model, encoder, config

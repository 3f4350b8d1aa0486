"""Open a training run directory: its checkpoint, resolved config, frozen encoder and model.

A *run* is the ``--out`` folder of ``lam-fast train`` (``config.yaml``, ``metrics.jsonl``,
``checkpoints/step_*/``, optionally ``decoder/``); a *checkpoint* is one ``step_*`` folder. Every
function here accepts either and reads only YAML, JSON and safetensors (nothing that can execute
code). A checkpoint is checked before it is read (``training.checkpoint.checkpoint_problem``): in a
run, a broken newest one is skipped with a warning naming the file and why, and the newest intact one
is opened; a broken checkpoint named directly, or a run with none intact, is a CheckpointError. This module sits above ``training`` (it needs the config schema and the checkpoint layout)
and below ``planning``, ``eval`` and ``cli``, which open runs through it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch

from lam_fast.errors import CheckpointError
from lam_fast.training.checkpoint import CHECKPOINT_DIR, MODEL_FILE, Expect, checkpoint_problem, select_checkpoint
from lam_fast.training.config import TrainConfig, make_config


class Run(NamedTuple):
    """A loaded run: unpack as ``config, encoder, model = load_run(path)``."""

    config: TrainConfig
    encoder: torch.nn.Module
    model: torch.nn.Module


def checkpoint_dir(path: str | os.PathLike[str], expect: Expect | None = None) -> Path:
    """The checkpoint folder of ``path``, checked: ``path`` itself when it holds ``model.safetensors``
    (CheckpointError naming the file when it is broken), else the run's newest intact checkpoint
    (broken newer ones skipped with a warning). ``expect(config)``: the weights' shapes, when they
    are to be checked. FileNotFoundError naming ``path`` when there is no checkpoint."""
    path = Path(path)
    problem = lambda candidate: checkpoint_problem(candidate, expect=expect)  # noqa: E731
    if (path / MODEL_FILE).is_file():
        why = problem(path)
        if why is not None:
            raise CheckpointError(f"checkpoint {path} is unusable: {why}")
        return path
    directory, _ = select_checkpoint(path, problem)
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

    built = {}

    def expect(cfg: TrainConfig) -> dict[str, tuple]:  # the model of each checkpoint looked at: the last is used
        if built.get("config") != cfg:
            encoder = build_encoder(cfg.encoder, cfg.image_size, **cfg.encoder_options())
            model = LatentActionWorldModel(cfg.model_config(), state_dim=encoder.dim, grid=encoder.grid)
            built.update(config=cfg, encoder=encoder, model=model)
        return {key: tuple(value.shape) for key, value in built["model"].state_dict().items()}

    directory = checkpoint_dir(path, expect)
    cfg = make_config(directory / "config.yaml")
    expect(cfg)
    encoder, model = built["encoder"].to(device), built["model"]
    model.load_state_dict(load_file(str(directory / MODEL_FILE)))
    return Run(cfg, encoder, model.to(device).eval())


def load_world_model(path: str | os.PathLike[str], device: str | torch.device = "cpu"):
    """``(model, encoder, config)``: :func:`load_run` in the order of the former
    ``lam_fast.training.checkpoint.load_world_model`` (kept so existing code keeps working)."""
    config, encoder, model = load_run(path, device)
    return model, encoder, config

"""Atomic, pickle-free checkpoints.

Layout of ``OUT/checkpoints/step_000050/``: ``model.safetensors`` (consolidated fp32 weights),
``optimizer_rank{r}.{json,safetensors}`` (each rank's optimizer/scheduler state, which is sharded
under ZeRO), ``trainer.json`` (step, videos seen, skipped files, RNG states), ``config.yaml`` (the
resolved TrainConfig) and ``versions.json``. A checkpoint is written into ``step_000050.tmp`` and
renamed once every rank has finished, then ``latest`` is replaced atomically: a crash at any point
leaves the previous checkpoint intact and loadable. Only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "step_"


def checkpoint_root(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def step_dir_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def staging_dir(out: str | Path, step: int) -> Path:
    return checkpoint_root(out) / f"{step_dir_name(step)}.tmp"


def write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    import lam_fast

    versions = {"lam_fast": lam_fast.__version__, "torch": torch.__version__, "python": platform.python_version()}
    for dist in ("deepspeed", "safetensors", "av", "transformers", "triton"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def publish(out: str | Path, step: int, keep_last: int) -> Path:
    """Rename the staging directory of ``step`` into place, point ``latest`` at it, prune old ones.
    Call on one rank after every rank has written its files."""
    root = checkpoint_root(out)
    final = root / step_dir_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging_dir(out, step), final)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(root / "latest.tmp", "w") as f:
        f.write(final.name)
        f.flush()
        os.fsync(f.fileno())
    os.replace(root / "latest.tmp", root / "latest")
    for old in list_checkpoints(out)[:-keep_last]:
        shutil.rmtree(old)
    for stale in root.glob(f"{_PREFIX}*.tmp"):
        shutil.rmtree(stale)
    return final


def list_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging directories are ignored)."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and not p.name.endswith(".tmp")]
    return sorted(done, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(out: str | Path) -> Path | None:
    root = checkpoint_root(out)
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "trainer.json").is_file():
            return candidate
    done = list_checkpoints(out)
    return done[-1] if done else None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_world_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a trained model from a run directory (its latest checkpoint) or a checkpoint directory.

    Returns ``(model, encoder, cfg)``: the :class:`LatentActionWorldModel` in eval mode with the saved
    weights, the frozen encoder it was trained on, and the resolved :class:`TrainConfig`. Reads only
    YAML, JSON and safetensors.
    """
    from safetensors.torch import load_file

    from lam_fast.models import LatentActionWorldModel
    from lam_fast.models.encoders import build_encoder
    from lam_fast.training.config import make_config

    path = Path(path)
    directory = path if (path / "model.safetensors").is_file() else latest_checkpoint(path)
    if directory is None:
        raise FileNotFoundError(f"no checkpoint in {path} (expected model.safetensors or {CHECKPOINT_DIR}/)")
    cfg = make_config(directory / "config.yaml")
    encoder = build_encoder(cfg.encoder, cfg.image_size, **cfg.encoder_options()).to(device)
    model = LatentActionWorldModel(cfg.model_config(), state_dim=encoder.dim, grid=encoder.grid)
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.to(device).eval(), encoder, cfg

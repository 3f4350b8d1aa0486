"""Atomic, pickle-free checkpoints.

Layout of ``OUT/checkpoints/step_000050/``: ``model.safetensors`` (consolidated fp32 weights),
``optimizer_rank{r}.{json,safetensors}`` (each rank's optimizer/scheduler state, which is sharded
under ZeRO), ``trainer.json`` (step, videos seen, skipped files, RNG states), ``config.yaml`` (the
resolved TrainConfig) and ``versions.json``. A checkpoint is written into ``step_000050.tmp`` and
renamed once every rank has finished, then ``latest`` is replaced atomically: a crash at any point
leaves the previous checkpoint intact and loadable. Only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from lam_fast._moved import moved
from lam_fast.io import publish_dir, write_text_atomic

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "step_"


def checkpoint_root(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def step_dir_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def staging_dir(out: str | Path, step: int) -> Path:
    return checkpoint_root(out) / f"{step_dir_name(step)}.tmp"


def publish(out: str | Path, step: int, keep_last: int) -> Path:
    """Rename the staging directory of ``step`` into place, point ``latest`` at it, prune old ones.
    Call on one rank after every rank has written its files."""
    root = checkpoint_root(out)
    final = root / step_dir_name(step)
    if final.exists():
        shutil.rmtree(final)
    publish_dir(staging_dir(out, step), final)
    write_text_atomic(root / "latest", final.name)
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


# load_world_model moved to lam_fast.runs (a run directory is opened above the training layer)
__getattr__ = moved(__name__, {"load_world_model": "lam_fast.runs"})

"""Atomic, pickle-free checkpoints, validated before use.

Layout of ``OUT/checkpoints/step_000050/``: ``model.safetensors`` (consolidated fp32 weights),
``optimizer_rank{r}.{json,safetensors}`` (each rank's optimizer/scheduler state, which is sharded
under ZeRO), ``trainer.json`` (step, videos seen, skipped files, RNG states), ``config.yaml`` (the
resolved TrainConfig) and ``versions.json``. A checkpoint is written into ``step_000050.tmp`` and
renamed once every rank has finished, then ``latest`` is replaced atomically: a crash at any point
leaves the previous checkpoint intact and loadable. Only the newest ``keep_last`` are kept.

``latest`` holds a name (``step_000050``), never a path: anything else in it is ignored with a
warning. Before a checkpoint is used (:func:`select_checkpoint`, :func:`checkpoint_problem`) every
file it needs is checked: present, safetensors whole, JSON with the expected keys, tensor shapes
those of the model. A broken one is skipped with a :class:`CheckpointWarning` naming the file and
why, and the newest intact one is used; with none, :class:`~lam_fast.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from lam_fast._moved import moved
from lam_fast.errors import CheckpointError
from lam_fast.io import TMP_SUFFIX, check_safetensors, check_tree, fault_point, publish_dir, write_text_atomic
from lam_fast.training.config import TrainConfig, make_config

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "step_"
_NAME = re.compile(r"step_(\d+)")
#: a broken checkpoint newer than the one a run resumes from is renamed ``step_N.broken`` (kept for
#: inspection, never listed or pruned)
BROKEN_SUFFIX = ".broken"
MODEL_FILE, TRAINER_FILE, CONFIG_FILE = "model.safetensors", "trainer.json", "config.yaml"
#: trainer.json: key -> type, what a resume reads
TRAINER_KEYS = {"step": int, "videos_seen": int, "batches_read": int, "read_failures": int, "world_size": int,
                "engine": str}


class CheckpointWarning(UserWarning):
    """A checkpoint (or the ``latest`` pointer) was skipped: the message names the file and why."""


def checkpoint_root(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def step_dir_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def staging_dir(out: str | Path, step: int) -> Path:
    return checkpoint_root(out) / f"{step_dir_name(step)}{TMP_SUFFIX}"


def publish(out: str | Path, step: int, keep_last: int) -> Path:
    """Rename the staging directory of ``step`` into place, point ``latest`` at it, prune old ones.
    Call on one rank after every rank has written its files."""
    root = checkpoint_root(out)
    final = root / step_dir_name(step)
    fault_point("save:before_rename")
    if final.exists():
        shutil.rmtree(final)
    publish_dir(staging_dir(out, step), final)
    fault_point("save:before_latest")
    write_text_atomic(root / "latest", final.name)
    fault_point("save:before_prune")
    prune(out, keep_last, keep=final)
    return final


def prune(out: str | Path, keep_last: int, keep: Path | None = None) -> None:
    """Remove staging leftovers and all but the newest ``keep_last`` checkpoints (never ``keep``)."""
    root = checkpoint_root(out)
    for old in list_checkpoints(out)[:-max(keep_last, 1)]:
        if old != keep:
            shutil.rmtree(old)
    if root.is_dir():
        for stale in root.glob(f"{_PREFIX}*{TMP_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)


def _step_of(name: str) -> int | None:
    match = _NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def list_checkpoints(out: str | Path) -> list[Path]:
    """Published checkpoints (``step_<digits>`` folders), oldest first; staging (``.tmp``) and
    ``.broken`` folders are not checkpoints."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if _step_of(p.name) is not None and p.is_dir()]
    return sorted(done, key=lambda p: _step_of(p.name))


def _pointer(out: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, when it names a sibling ``step_*`` folder that exists; any
    other content (a path, ``..``, another run) is ignored with a warning."""
    root = checkpoint_root(out)
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_text(errors="replace").strip()
    if _step_of(name) is None:
        warnings.warn(f"{pointer} holds {name[:200]!r}, not the name of a step_* folder beside it: ignored, "
                      "using the newest intact checkpoint", CheckpointWarning, stacklevel=3)
        return None
    return root / name if (root / name).is_dir() else None


def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, else the newest one (not validated: see :func:`select_checkpoint`)."""
    named = _pointer(out)
    if named is not None and (named / TRAINER_FILE).is_file():
        return named
    done = list_checkpoints(out)
    return done[-1] if done else None


def _candidates(out: str | Path) -> list[Path]:
    """The checkpoint ``latest`` names first, then the others newest first."""
    named = _pointer(out)
    rest = [p for p in reversed(list_checkpoints(out)) if p != named]
    return ([named] if named is not None else []) + rest


def select_checkpoint(out: str | Path, problem: Callable[[Path], str | None]) -> tuple[Path | None, list[Path]]:
    """``(the first usable checkpoint of the run, the broken ones skipped before it)``: in the order
    of :func:`_candidates`, ``problem(path)`` says why one is unusable (None: intact). Each skipped
    one is a CheckpointWarning; ``(None, [])`` when the run has no checkpoint; CheckpointError when
    it has some and none is intact."""
    skipped: list[tuple[Path, str]] = []
    for candidate in _candidates(out):
        why = problem(candidate)
        if why is None:
            return candidate, [path for path, _ in skipped]
        skipped.append((candidate, why))
        warnings.warn(f"skipping checkpoint {candidate}: {why}", CheckpointWarning, stacklevel=2)
    if skipped:
        listing = "; ".join(f"{path.name}: {why}" for path, why in skipped)
        raise CheckpointError(f"no intact checkpoint in {checkpoint_root(out)} ({listing})")
    return None, []


def move_aside(broken: list[Path], newer_than: Path | None) -> None:
    """Rename the broken checkpoints newer than ``newer_than`` (the one a run resumes from) to
    ``step_N.broken``, so that the resumed run's own checkpoints are the newest again."""
    floor = -1 if newer_than is None else _step_of(newer_than.name)
    for path in broken:
        if _step_of(path.name) > floor and path.is_dir():
            target = path.with_name(path.name + BROKEN_SUFFIX)
            shutil.rmtree(target, ignore_errors=True)
            path.rename(target)
            warnings.warn(f"moved the broken checkpoint {path.name} aside to {target} (delete it when not needed)",
                          CheckpointWarning, stacklevel=2)


# ------------------------------------------------------------------ what makes a checkpoint intact

def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path.name}: not JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    return value


def _check_trainer(path: Path) -> dict:
    meta = _read_json(path / TRAINER_FILE)
    for key, kind in TRAINER_KEYS.items():
        if key not in meta:
            raise ValueError(f"{TRAINER_FILE}: no {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise ValueError(f"{TRAINER_FILE}: {key!r} is {meta[key]!r}, not a{'n' if kind is int else ''} "
                             f"{kind.__name__}")
    if meta["step"] != _step_of(path.name):
        raise ValueError(f"{TRAINER_FILE}: step {meta['step']} in the folder of step {_step_of(path.name)}")
    if meta["world_size"] < 1:
        raise ValueError(f"{TRAINER_FILE}: world_size {meta['world_size']}")
    return meta


def _check_shapes(found: Mapping[str, tuple], expected: Mapping[str, tuple]) -> None:
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise ValueError(f"{MODEL_FILE}: tensors missing {missing[:3]}, unexpected {extra[:3]} "
                         "(not the model its config.yaml builds)")
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            raise ValueError(f"{MODEL_FILE}: {name} has shape {list(found[name])}, the model its config.yaml "
                             f"builds has {list(shape)}")


#: the tensor shapes a checkpoint's weights must have, given its config (None: not checked)
Expect = Callable[[TrainConfig], "Mapping[str, tuple] | None"]


def _check(path: Path, resume: bool, expect: Expect | None) -> None:
    needed = [MODEL_FILE, CONFIG_FILE] + ([TRAINER_FILE] if resume else [])
    for name in needed:
        if not (path / name).is_file():
            raise ValueError(f"{name}: missing")
    try:
        config = make_config(path / CONFIG_FILE)
    except Exception as error:  # noqa: BLE001 - any failure to read the config makes the checkpoint unusable
        raise ValueError(f"{CONFIG_FILE}: {error}") from None
    found = check_safetensors(path / MODEL_FILE)
    shapes = expect(config) if expect is not None else None
    if shapes is not None:
        _check_shapes(found, shapes)
    if resume:
        meta = _check_trainer(path)
        for rank in range(meta["world_size"]):
            check_tree(path / f"optimizer_rank{rank}")


def checkpoint_problem(path: str | Path, *, resume: bool = False, expect: Expect | None = None) -> str | None:
    """Why the checkpoint ``path`` cannot be used, naming the file (``"trainer.json: no 'world_size'"``),
    or None when it is intact. Always: ``model.safetensors`` whole, ``config.yaml`` a valid config,
    the weights' shapes those ``expect(config)`` gives (name -> shape; the model the checkpoint's
    own config builds); ``resume``: also ``trainer.json`` with its keys and every rank's optimizer files."""
    try:
        _check(Path(path), resume, expect)
    except FileNotFoundError as error:
        return f"{Path(error.filename or '?').name}: missing"
    except (OSError, ValueError) as error:
        return str(error)
    return None


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

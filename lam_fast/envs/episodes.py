"""The on-disk form of a sim dataset: :func:`generate` writes it, :func:`load_episodes` reads it.

Files written by :func:`generate` into ``out/``:

- ``episode_{i:05d}.mp4``: H.264, crf 18, yuv420p, at ``fps``. What a world model trains on,
  through the normal video pipeline (:class:`~lam_fast.data.VideoClipDataset`), without labels.
- ``episode_{i:05d}.npz``: ``frames`` uint8 (T, H, W, 3), ``actions`` float32 (T-1, A), ``poses``
  float32 (T, P), ``task``, ``seed``, ``index``: the exact episode, for evaluation.
- ``meta.json``: task, its :class:`~lam_fast.envs.SimTaskInfo` fields, episodes, frames,
  image_size, fps, seed, scene_seed, mujoco version.

Episode ``i`` renders with the seed :func:`episode_seed` ``(seed, i)``. Command line:
``lam-fast sim generate --task reacher --episodes 100 --frames 64 --out DIR`` and
``lam-fast sim info DIR`` (:mod:`lam_fast.cli.sim`).
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import numpy as np

from lam_fast.envs.render import import_mujoco
from lam_fast.envs.simulate import render_episode
from lam_fast.envs.tasks import SIM_TASKS, TASK_INFO, SimEpisode, SimTaskInfo, validate_int, validate_task
from lam_fast.errors import UserError
from lam_fast.io import atomic_write, write_json_atomic


class NotASimDataset(UserError, FileNotFoundError):
    """A folder given as a sim dataset holds no ``meta.json`` of :func:`generate` (the message names it)."""

_META_KEYS = ("task", "frames", "image_size", "fps", "seed", "scene_seed")
_NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile, zlib.error)


def episode_seed(seed: int, index: int) -> int:
    """The render seed of episode ``index`` of a dataset generated with ``seed`` (63 bits)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as H.264 (crf 18, yuv420p) at ``fps`` into ``path``."""
    import av

    rate = Fraction(fps).limit_denominator(100_000)
    height, width = frames.shape[1:3]
    with av.open(os.fspath(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = k
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_npz(path: Path, episode: SimEpisode, index: int) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(handle, frames=episode.frames, actions=episode.actions, poses=episode.poses,
                            task=np.array(episode.task), seed=np.array(episode.seed, np.int64),
                            index=np.array(index, np.int64))


def _merge_meta(meta_path: Path, meta: dict) -> dict:
    """``meta`` for a folder that may hold an earlier run: refused if that run used other settings,
    else with ``episodes`` the larger of both counts."""
    if not meta_path.exists():
        return meta
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{meta_path}: unreadable meta.json ({error}); remove it or use another "
                         "folder") from error
    differing = {key: (old.get(key), meta[key]) for key in _META_KEYS if old.get(key) != meta[key]}
    if differing:
        shown = ", ".join(f"{key}: {was!r} there, {now!r} asked" for key, (was, now) in differing.items())
        raise ValueError(f"{meta_path.parent} holds a sim dataset with other settings ({shown}); use another folder")
    return {**meta, "episodes": max(meta["episodes"], int(old.get("episodes", 0)))}


def generate(task: str, out: str | Path, *, episodes: int, frames: int, seed: int = 0, image_size: int = 64,
             fps: float = 4.0, progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Render ``episodes`` episodes of ``task`` into ``out`` (see the module docstring for the files).

    Episode ``i`` uses the seed :func:`episode_seed` ``(seed, i)`` and the nav layout
    ``scene_seed = seed``. Every file is written atomically; episodes whose ``.npz`` and ``.mp4``
    both exist are skipped, so an interrupted run is resumed by running it again. A folder whose
    ``meta.json`` records other settings (task, frames, image_size, fps, seed) is refused.

    Args:
        task: ``"reacher"`` or ``"nav"``.
        out: output folder (created).
        episodes: number of episodes (>= 1).
        frames: frames per episode (>= 2).
        seed: dataset seed (>= 0).
        image_size: square frame side in pixels (even, >= 16: H.264 in yuv420p needs even sides).
        fps: frame rate written into the videos (> 0).
        progress: optional ``progress(done, episodes)`` callback after each episode.

    Returns:
        The ``.mp4`` paths of episodes ``0 .. episodes - 1``.

    Raises:
        ValueError: invalid arguments, or a folder holding another dataset.
        RenderUnavailable: no MuJoCo or no offscreen OpenGL backend here.
    """
    info = validate_task(task)
    episodes = validate_int("episodes", episodes, 1)
    frames = validate_int("frames", frames, 2)
    seed = validate_int("seed", seed, 0)
    image_size = validate_int("image_size", image_size, 16)
    if image_size % 2:
        raise ValueError(f"image_size must be even (H.264 yuv420p), got {image_size}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    mujoco = import_mujoco()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**asdict(info), "task": task, "episodes": episodes, "frames": frames, "image_size": image_size,
            "fps": float(fps), "seed": seed, "scene_seed": seed, "mujoco_version": mujoco.__version__}
    write_json_atomic(out / "meta.json", _merge_meta(out / "meta.json", meta), indent=2)
    videos = []
    for index in range(episodes):
        npz, mp4 = out / f"episode_{index:05d}.npz", out / f"episode_{index:05d}.mp4"
        if not (npz.is_file() and mp4.is_file()):
            episode = render_episode(task, seed=episode_seed(seed, index), frames=frames,
                                     image_size=image_size, scene_seed=seed)
            atomic_write(npz, lambda path: _write_npz(path, episode, index))
            atomic_write(mp4, lambda path: _write_mp4(path, episode.frames, fps))
        videos.append(mp4)
        if progress is not None:
            progress(index + 1, episodes)
    return videos


def _read_npz(path: Path, info: SimTaskInfo) -> SimEpisode:
    """One episode file; ValueError (or a reading error of :data:`_NPZ_ERRORS`) if it is unusable."""
    with np.load(path) as archive:
        frames, actions, poses = archive["frames"], archive["actions"], archive["poses"]
        seed = int(archive["seed"]) if "seed" in archive.files else -1
    count = frames.shape[0] if frames.ndim == 4 else -1
    if (frames.dtype != np.uint8 or count < 2 or frames.shape[-1] != 3
            or actions.shape != (count - 1, len(info.action_names))
            or poses.shape != (count, len(info.pose_names))):
        raise ValueError(f"inconsistent arrays: frames {frames.shape} {frames.dtype}, "
                         f"actions {actions.shape}, poses {poses.shape}")
    return SimEpisode(frames=frames, actions=actions.astype(np.float32, copy=False),
                      poses=poses.astype(np.float32, copy=False), task=info.name, seed=seed)


def load_episodes(directory: str | Path) -> tuple[SimTaskInfo, dict, list[SimEpisode]]:
    """Load a folder written by :func:`generate`: ``(task info, meta dict, episodes)``.

    Episodes come from every ``episode_*.npz`` in name order. A file that cannot be read or has
    inconsistent arrays is skipped with a warning; the meta dict lists their names in
    ``meta["skipped"]``.

    Raises:
        NotASimDataset: (a FileNotFoundError and a UserError) no ``meta.json`` in ``directory``.
        ValueError: ``meta.json`` unreadable or naming an unknown task.
    """
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise NotASimDataset(f"{directory} is not a sim dataset: expected {meta_path} (and episode_*.npz), "
                             "written by lam-fast sim generate (lam_fast.envs.generate)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{meta_path}: unreadable meta.json ({error})") from error
    task = meta.get("task") if isinstance(meta, dict) else None
    if task not in TASK_INFO:
        raise ValueError(f"{meta_path}: unknown task {task!r} (known: {', '.join(SIM_TASKS)})")
    info = TASK_INFO[task]
    episodes, skipped = [], []
    for path in sorted(directory.glob("episode_*.npz")):
        try:
            episodes.append(_read_npz(path, info))
        except _NPZ_ERRORS as error:
            skipped.append(path.name)
            warnings.warn(f"load_episodes skips {path}: {type(error).__name__}: {error}", stacklevel=2)
    meta["skipped"] = skipped
    return info, meta, episodes

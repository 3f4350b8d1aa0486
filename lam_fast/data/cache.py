"""Encoded-state caches: run a frozen encoder over a video collection once, train from its states.

``lam-fast encode`` (:func:`encode_to_cache`) samples every usable video whole at ``fps`` from
its first frame, encodes it with a frozen encoder (:mod:`lam_fast.models.encoders`) and stores
the states; :class:`StateCacheDataset` then serves clips of consecutive states with the index
scheme of :class:`~lam_fast.data.dataset.VideoClipDataset`, so training skips decoding and the
encoder (for V-JEPA 2 by far the most expensive part of a step).

Format (version 1): a directory holding

- ``states-00000.safetensors``, ``states-00001.safetensors``, ...: shards; each holds one tensor
  per video, named by the video's key (``v00000123``: the video's position among the usable
  videos of the source), of shape ``(num_states, N, D)`` (``N`` tokens of dimension ``D``) in
  the cache's ``dtype`` (``fp32``, ``bf16`` (default: half the disk of fp32) or ``fp16``). State
  ``k`` of a video encodes its frames at times ``(k * frames_per_state + j) / fps``,
  ``j < frames_per_state``, picked by the decoders' nearest-frame rule. A video is never split
  across shards; a shard is closed once adding the next video would take it past the shard
  size (so a shard exceeds it only when it holds a single larger video).
- ``manifest.json``, written last (so a directory without one is not a cache)::

      {"format": "lam_fast.state_cache", "version": 1,
       "encoder": {"name", "options", "dim", "grid", "num_tokens", "frames_per_state"},
       "fps", "image_size", "dtype", "decoder",
       "videos": [{"name", "shard", "key", "num_states", "duration"}, ...],
       "skipped": [[name, reason], ...],       # unreadable, too short, or failed to decode
       "shards": [file, ...], "num_states", "source", "created", "versions": {...}}

  ``encoder.options`` are the encoder's options with defaults filled in
  (:func:`normalize_encoder_options`), e.g. ``{"patch_size": 8}`` for ``pixels``.

Crash safety and resuming: every file is written under a temporary name, fsynced and renamed
into place. While an encode runs, ``progress.json`` (rewritten atomically after each shard)
lists the completed shards, the videos that failed and the settings. Rerunning the same command
on the directory of an interrupted encode resumes: completed shards are kept and their videos are
not encoded again; anything written after the last recorded shard is discarded. Different
settings, a directory holding a finished cache or a non-empty directory holding anything else
are refused with an error saying what to do.

A whole video is sampled as ``n`` frames with ``(n - 1) / fps <= duration``, ``n`` rounded down
to a multiple of ``frames_per_state``: the states of one video are the states of every clip the
video dataset could draw at starts ``k * frames_per_state / fps``. Videos are decoded and encoded
in chunks of ``batch_frames`` frames; every state depends only on its own frames (the encoders
are frame-causal), so chunking does not change the result.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import hashlib
import inspect
import json
import math
import operator
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch.utils.data import Dataset

from lam_fast.data.dataset import _START_STREAM, Source, VideoClipDataset, _rng
from lam_fast.data.decoders import ClipDecoder, ClipRequest, make_decoder
from lam_fast.data.video import VideoDecodeError, VideoInfo
from lam_fast.io import TMP_SUFFIX, fsync_dir, save_safetensors_atomic, versions, write_json_atomic

__all__ = [
    "CACHE_DTYPES",
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "StateCacheDataset",
    "StateItem",
    "add_encode_arguments",
    "encode_main",
    "encode_to_cache",
    "is_state_cache",
    "normalize_encoder_options",
    "read_manifest",
    "run_encode",
]

CACHE_FORMAT = "lam_fast.state_cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
_PROGRESS_FORMAT = "lam_fast.state_cache.progress"
_SHARD_PREFIX = "states-"
_SHARD_SUFFIX = ".safetensors"

#: ``--dtype`` name -> storage dtype of the states.
CACHE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class StateItem(TypedDict):
    """One :class:`StateCacheDataset` item: float32 ``states`` (S', N, D) and its dataset ``index``."""

    states: torch.Tensor
    index: int


# ------------------------------------------------------------------------------------ file helpers


def _shard_name(number: int) -> str:
    return f"{_SHARD_PREFIX}{number:05d}{_SHARD_SUFFIX}"


def _write_shard(out: Path, number: int, tensors: dict[str, torch.Tensor]) -> str:
    """Write shard ``number`` of ``out`` (temporary name, fsync, rename); return its file name."""
    name = _shard_name(number)
    save_safetensors_atomic(out / name, tensors, metadata={"format": CACHE_FORMAT, "version": str(CACHE_VERSION)})
    return name


def read_manifest(path: str | os.PathLike[str]) -> dict:
    """The manifest of the state cache at ``path``.

    Raises:
        ValueError: ``path`` is not a finished state cache of a supported version (the message
            says why: no manifest, an interrupted encode, another format or version).
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        if (root / PROGRESS).is_file():
            raise ValueError(f"{os.fspath(root)!r} holds an unfinished `lam-fast encode` (no {MANIFEST}, "
                             f"a {PROGRESS}): rerun the same encode command to finish it")
        raise ValueError(f"{os.fspath(root)!r} is not a state cache (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {os.fspath(manifest_path)!r}: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise ValueError(f"{os.fspath(manifest_path)!r} is not a {CACHE_FORMAT} manifest")
    if manifest.get("version") != CACHE_VERSION:
        raise ValueError(f"{os.fspath(manifest_path)!r} has version {manifest.get('version')!r}; this "
                         f"lam_fast reads version {CACHE_VERSION}: re-encode the videos")
    return manifest


def is_state_cache(path: Any) -> bool:
    """True when ``path`` is a directory holding a finished state cache's manifest."""
    if path is None or not isinstance(path, (str, os.PathLike)):
        return False
    try:
        read_manifest(path)
    except (ValueError, OSError, TypeError):
        return False
    return True


# ------------------------------------------------------------------------------------ settings


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (a config object through its ``to_dict``)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def normalize_encoder_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options of encoder ``name`` with its defaults filled in, as JSON data.

    So ``{}`` and ``{"patch_size": 8}`` compare equal for ``pixels``, and so do ``{}`` and the
    default model id for ``vjepa2``. Options set to None are dropped.
    """
    from lam_fast.models.encoders import _ENCODER_CLASSES, DEFAULT_VJEPA2_MODEL

    result = {key: value for key, value in dict(options or {}).items() if value is not None}
    cls = _ENCODER_CLASSES.get(name)
    if cls is not None:
        for param in inspect.signature(cls.__init__).parameters.values():
            if param.name in cls.OPTIONS and param.default not in (None, inspect.Parameter.empty):
                result.setdefault(param.name, param.default)
    if name == "vjepa2" and "config" not in result:
        result.setdefault("model", DEFAULT_VJEPA2_MODEL)
    return {key: _jsonable(value) for key, value in sorted(result.items())}


_EXPECT_KEYS = ("encoder", "encoder_options", "image_size", "fps", "dtype", "frames_per_state")


def _check_expect(manifest: dict, expect: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming every key of ``expect`` that the manifest contradicts."""
    unknown = sorted(set(expect) - set(_EXPECT_KEYS))
    if unknown:
        raise ValueError(f"unknown expect key(s) {unknown}; allowed: {list(_EXPECT_KEYS)}")
    encoder = manifest["encoder"]
    actual = {
        "encoder": encoder["name"],
        "encoder_options": encoder["options"],
        "image_size": manifest["image_size"],
        "fps": manifest["fps"],
        "dtype": manifest["dtype"],
        "frames_per_state": encoder["frames_per_state"],
    }
    wanted = dict(expect)
    if "encoder_options" in wanted:
        wanted["encoder_options"] = normalize_encoder_options(wanted.get("encoder", encoder["name"]),
                                                              wanted["encoder_options"])
    problems = []
    for key in _EXPECT_KEYS:
        if key not in wanted:
            continue
        have, want = actual[key], wanted[key]
        if key == "fps":
            same = math.isclose(float(have), float(want), rel_tol=1e-9, abs_tol=0.0)
        else:
            same = have == want
        if not same:
            problems.append(f"{key}: cache has {have!r}, expected {want!r}")
    if problems:
        raise ValueError(f"the state cache {where!r} was encoded with other settings ("
                         + "; ".join(problems)
                         + "): train with the cache's settings or encode the videos again with "
                           "`lam-fast encode` and these settings")


# ------------------------------------------------------------------------------------ encoding


def _whole_video_frames(info: VideoInfo, fps: float, frames_per_state: int) -> int:
    """Frames sampled from a whole video: (n - 1) / fps <= duration, n a multiple of frames_per_state."""
    n = math.floor(Fraction(info.duration) * Fraction(fps)) + 1
    return n - n % frames_per_state


def _encode_video(
    info: VideoInfo,
    encoder: torch.nn.Module,
    decoder: ClipDecoder,
    *,
    fps: float,
    image_size: int,
    chunk: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """States (num_states, N, D) of the whole of ``info`` in ``dtype`` on the CPU.

    Raises:
        VideoDecodeError: a chunk cannot be decoded.
    """
    frames = _whole_video_frames(info, fps, encoder.frames_per_state)
    parts = []
    for first in range(0, frames, chunk):
        count = min(chunk, frames - first)
        video = decoder.decode(ClipRequest(info, first / fps, count, fps, image_size))
        with torch.no_grad():
            states = encoder.encode(video.unsqueeze(0).to(device))[0]
        parts.append(states.to(dtype).cpu())
    return torch.cat(parts)


def _settings_mismatch(saved: dict, current: dict) -> list[str]:
    return [f"{key}: unfinished encode has {saved.get(key)!r}, now {current.get(key)!r}"
            for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]


def _prepare_out(out: Path) -> dict | None:
    """Check that ``out`` may be written; return the progress of an unfinished encode, if any."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {os.fspath(out)!r} exists and is not a directory")
    if not out.exists():
        return None
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{os.fspath(out)!r} already holds a finished state cache: delete it to "
                              "encode again, or choose another --out")
    progress_path = out / PROGRESS
    if progress_path.is_file():
        try:
            progress = json.loads(progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise FileExistsError(f"cannot read {os.fspath(progress_path)!r} ({error}): delete "
                                  f"{os.fspath(out)!r} and encode again") from error
        if not isinstance(progress, dict) or progress.get("format") != _PROGRESS_FORMAT \
                or progress.get("version") != CACHE_VERSION:
            raise FileExistsError(f"{os.fspath(progress_path)!r} is not a lam_fast encode progress file "
                                  f"of version {CACHE_VERSION}: delete {os.fspath(out)!r} and encode again")
        return progress
    # a crash while writing the first progress file leaves only its temporary file
    ours = (PROGRESS, MANIFEST)
    if any(not (path.name.endswith(TMP_SUFFIX) and path.name.lstrip(".").startswith(ours))
           for path in out.iterdir()):
        raise FileExistsError(f"--out {os.fspath(out)!r} is not empty and holds no unfinished "
                              "`lam-fast encode` work: choose a new or empty directory")
    return None


def _discard_unrecorded(out: Path, kept: set[str]) -> None:
    """Remove shards and temporary files that the progress file does not record."""
    for path in out.iterdir():
        name = path.name
        stale_shard = name.startswith(_SHARD_PREFIX) and name.endswith(_SHARD_SUFFIX) and name not in kept
        if path.is_file() and (stale_shard or name.endswith(TMP_SUFFIX)):
            path.unlink()


def encode_to_cache(
    source: Source,
    out: str | os.PathLike[str],
    *,
    encoder: str,
    image_size: int,
    fps: float,
    encoder_options: Mapping[str, Any] | None = None,
    decoder: str | ClipDecoder = "auto",
    device: str | torch.device = "cpu",
    dtype: str = "bf16",
    batch_frames: int = 64,
    shard_size_mb: float = 1024,
    progress: bool = True,
) -> Path:
    """Encode every usable video of ``source`` with a frozen encoder into a state cache at ``out``.

    Videos are probed and skipped like :class:`~lam_fast.data.dataset.VideoClipDataset` does
    (unreadable, truncated, shorter than one state, or a codec the decoder lacks); a video that
    fails to decode while encoding is skipped too. All of them are listed with their reasons in
    the manifest's ``skipped``; nothing here stops on a bad file. See the module docstring for the
    format and for resuming an interrupted encode.

    Args:
        source: a folder, CSV list, video file, tar shards or list of paths
            (see :func:`~lam_fast.data.dataset.resolve_sources`).
        out: the cache directory: new, empty, or an interrupted encode of the same settings.
        encoder: encoder name (see :func:`~lam_fast.models.encoders.build_encoder`).
        image_size: frame side in pixels.
        fps: sampling rate of the frames (> 0).
        encoder_options: options of the encoder (pixels: ``patch_size``; vjepa2: ``model``...).
        decoder: decoder name (``auto``, ``pyav``, ``opencv``, ``dali``) or a decoder.
        device: where the encoder runs (and, for ``auto``/``dali``, where frames are decoded).
        dtype: storage dtype, ``fp32``, ``bf16`` or ``fp16``.
        batch_frames: frames decoded and encoded at once (rounded down to a multiple of the
            encoder's ``frames_per_state``, at least one state).
        shard_size_mb: shard size in MiB at which a new shard starts.
        progress: show a tqdm progress bar.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: invalid arguments, no usable video, no video encoded, or an unfinished encode
            in ``out`` with other settings (the message names them).
        FileExistsError: ``out`` holds a finished cache or unrelated files.
    """
    from tqdm import tqdm

    from lam_fast.models.encoders import build_encoder

    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype must be one of {list(CACHE_DTYPES)}, got {dtype!r}")
    if isinstance(batch_frames, bool) or not isinstance(batch_frames, int) or batch_frames < 1:
        raise ValueError(f"batch_frames must be an int >= 1, got {batch_frames!r}")
    if isinstance(shard_size_mb, bool) or not isinstance(shard_size_mb, (int, float)) \
            or not math.isfinite(shard_size_mb) or shard_size_mb <= 0:
        raise ValueError(f"shard_size_mb must be a number > 0, got {shard_size_mb!r}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    fps = float(fps)
    out = Path(out)
    saved_progress = _prepare_out(out)  # before the slow probing: refuse early

    device = torch.device(device)
    options = dict(encoder_options or {})
    model = build_encoder(encoder, image_size, **options).to(device)
    clip_decoder = make_decoder(decoder, device) if isinstance(decoder, str) else decoder
    fps_state = model.frames_per_state
    chunk = max(fps_state, batch_frames - batch_frames % fps_state)
    storage = CACHE_DTYPES[dtype]
    shard_bytes = shard_size_mb * 2**20

    # Probing and the skip policy of the video dataset: a "clip" of one state.
    probed = VideoClipDataset(source, num_frames=fps_state, fps=fps, image_size=image_size,
                              decoder=clip_decoder)
    names = [info.path for info in probed.videos]
    encoder_info = {
        "name": model.name,
        "options": normalize_encoder_options(model.name, options),
        "dim": model.dim,
        "grid": list(model.grid),
        "num_tokens": model.num_tokens,
        "frames_per_state": fps_state,
    }
    settings = {
        "encoder": encoder_info,
        "fps": fps,
        "image_size": image_size,
        "dtype": dtype,
        "decoder": clip_decoder.name,
        "usable_videos_sha256": hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest(),
        "num_videos": len(names),
    }

    if saved_progress is not None:
        mismatch = _settings_mismatch(saved_progress.get("settings", {}), settings)
        if mismatch:
            raise ValueError(f"{os.fspath(out)!r} holds an unfinished encode with other settings ("
                             + "; ".join(mismatch)
                             + "): rerun it with its own settings, or delete the directory to start over")
        shards = list(saved_progress["shards"])
        failed = [tuple(item) for item in saved_progress["failed"]]
        missing = [shard["file"] for shard in shards if not (out / shard["file"]).is_file()]
        if missing:
            raise ValueError(f"{os.fspath(out)!r}: shard(s) {missing} recorded as complete are missing: "
                             "delete the directory and encode again")
        _discard_unrecorded(out, {shard["file"] for shard in shards})
    else:
        out.mkdir(parents=True, exist_ok=True)
        _discard_unrecorded(out, set())
        shards, failed = [], []

    def save_progress() -> None:
        write_json_atomic(out / PROGRESS, {"format": _PROGRESS_FORMAT, "version": CACHE_VERSION,
                                            "settings": settings, "shards": shards,
                                            "failed": [list(item) for item in failed]})

    save_progress()  # marks the directory as this encode's unfinished work
    done = {entry["name"] for shard in shards for entry in shard["videos"]} | {name for name, _ in failed}

    pending: dict[str, torch.Tensor] = {}
    pending_entries: list[dict] = []
    pending_size = 0

    def flush() -> None:
        nonlocal pending, pending_entries, pending_size
        if not pending:
            return
        name = _write_shard(out, len(shards), pending)
        shards.append({"file": name, "videos": [dict(entry, shard=name) for entry in pending_entries]})
        save_progress()
        pending, pending_entries, pending_size = {}, [], 0

    bar = tqdm(total=len(probed.videos), desc=f"encode {model.name}", unit="video", disable=not progress,
               dynamic_ncols=True)
    try:
        for number, info in enumerate(probed.videos):
            if info.path in done:
                bar.update(1)
                continue
            try:
                states = _encode_video(info, model, clip_decoder, fps=fps, image_size=image_size,
                                       chunk=chunk, device=device, dtype=storage)
            except VideoDecodeError as error:
                failed.append((info.path, f"decoding failed while encoding: {error}"))
                warnings.warn(f"encode skips {info.path!r}: {error}", stacklevel=2)
                bar.update(1)
                continue
            size = states.numel() * states.element_size()
            if pending and pending_size + size > shard_bytes:
                flush()
            key = f"v{number:08d}"
            pending[key] = states
            pending_entries.append({"name": info.path, "key": key, "num_states": int(states.shape[0]),
                                    "duration": info.duration})
            pending_size += size
            bar.update(1)
        flush()
        if failed:
            save_progress()  # failures after the last shard
    finally:
        bar.close()

    videos = [entry for shard in shards for entry in shard["videos"]]
    skipped = [list(item) for item in probed.skipped] + [list(item) for item in failed]
    if not videos:
        shown = "; ".join(f"{name}: {reason}" for name, reason in skipped[:10])
        raise ValueError(f"no video could be encoded ({len(skipped)} skipped: {shown})")
    manifest = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "encoder": encoder_info,
        "fps": fps,
        "image_size": image_size,
        "dtype": dtype,
        "decoder": clip_decoder.name,
        "videos": [{key: entry[key] for key in ("name", "shard", "key", "num_states", "duration")}
                   for entry in videos],
        "skipped": skipped,
        "shards": [shard["file"] for shard in shards],
        "num_states": sum(entry["num_states"] for entry in videos),
        "source": os.fspath(source) if isinstance(source, (str, os.PathLike))
        else f"{len(list(source))} listed paths",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    write_json_atomic(out / MANIFEST, manifest)
    (out / PROGRESS).unlink()
    fsync_dir(out)
    return out


# ------------------------------------------------------------------------------------ dataset


class StateCacheDataset(Dataset):
    """Clips of ``num_frames`` frames from a state cache: ``num_frames // frames_per_state`` states.

    The index scheme of :class:`~lam_fast.data.dataset.VideoClipDataset`: an epoch has
    ``len(self)`` clips, any index >= 0 is valid and ``index // len(self)`` is its epoch. Video
    ``v`` contributes ``n = max(1, floor(num_states_v / S))`` slots (``S`` states per clip); of the
    ``V = num_states_v - S + 1`` valid start states, slot ``k`` owns ``[k * V // n, (k + 1) * V // n)``
    (never empty, as ``V >= n``), and the start is drawn uniformly among them by a generator
    seeded with ``(seed, stream, index)``: the same index always gives the same clip, each epoch
    new starts.
    Videos with fewer than ``S`` states are skipped with a warning; :attr:`skipped` lists them
    after the videos the encode skipped, as ``(name, reason)``.

    Items are read lazily: only the clip's window of states, through one safetensors handle per
    shard opened on first use in each process (DataLoader workers open their own).

    Args:
        path: the cache directory (written by :func:`encode_to_cache`).
        num_frames: frames per clip; a positive multiple of the encoder's ``frames_per_state``.
        seed: seed of the start draws (>= 0).
        expect: settings the cache must have, from ``encoder``, ``encoder_options``,
            ``image_size``, ``fps``, ``dtype``, ``frames_per_state``; a mismatch raises.

    Raises:
        ValueError: not a finished cache, a setting differs from ``expect`` (naming each key with
            both values), ``num_frames`` invalid, missing or inconsistent shards, no video long
            enough for one clip.
    """

    def __init__(self, path: str | os.PathLike[str], *, num_frames: int, seed: int = 0,
                 expect: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if expect:
            _check_expect(self.manifest, expect, os.fspath(self.path))
        self.encoder_info: dict = self.manifest["encoder"]
        self.frames_per_state: int = self.encoder_info["frames_per_state"]
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1 \
                or num_frames % self.frames_per_state:
            raise ValueError(f"num_frames must be a positive multiple of the cache encoder's "
                             f"frames_per_state={self.frames_per_state}, got {num_frames!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.num_frames = num_frames
        self.seed = seed
        self.states_per_clip = num_frames // self.frames_per_state
        self.state_shape: tuple[int, int] = (self.encoder_info["num_tokens"], self.encoder_info["dim"])
        self.fps = float(self.manifest["fps"])
        self.image_size = int(self.manifest["image_size"])
        self.read_failures = 0  # interface parity with VideoClipDataset: reads here do not fail softly
        self.skipped: list[tuple[str, str]] = [tuple(item) for item in self.manifest["skipped"]]
        self.videos: list[dict] = []
        for entry in self.manifest["videos"]:
            if entry["num_states"] < self.states_per_clip:
                reason = f"shorter than one clip ({entry['num_states']} states < {self.states_per_clip})"
                self.skipped.append((entry["name"], reason))
                warnings.warn(f"StateCacheDataset skips {entry['name']!r}: {reason}", stacklevel=2)
            else:
                self.videos.append(entry)
        if not self.videos:
            raise ValueError(f"no video in the state cache {os.fspath(self.path)!r} has the "
                             f"{self.states_per_clip} states of one clip of {num_frames} frames "
                             f"({len(self.skipped)} skipped)")
        self._check_shards()
        self._slot_offsets = [0]
        for entry in self.videos:
            self._slot_offsets.append(self._slot_offsets[-1] + max(1, entry["num_states"] // self.states_per_clip))
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()

    def _check_shards(self) -> None:
        """Every kept video's tensor exists with the manifest's shape (reads the shard headers only)."""
        from safetensors import safe_open

        by_shard: dict[str, list[dict]] = {}
        for entry in self.videos:
            by_shard.setdefault(entry["shard"], []).append(entry)
        for shard, entries in by_shard.items():
            file = self.path / shard
            if not file.is_file():
                raise ValueError(f"state cache {os.fspath(self.path)!r}: shard {shard!r} is missing")
            try:
                with safe_open(os.fspath(file), framework="pt") as handle:
                    keys = set(handle.keys())
                    shapes = {entry["key"]: handle.get_slice(entry["key"]).get_shape()
                              for entry in entries if entry["key"] in keys}
            except Exception as error:  # OSError, or safetensors' SafetensorError for a corrupt header
                raise ValueError(f"state cache {os.fspath(self.path)!r}: cannot read shard {shard!r}: "
                                 f"{error}") from error
            for entry in entries:
                want = [entry["num_states"], *self.state_shape]
                if shapes.get(entry["key"]) != want:
                    raise ValueError(f"state cache {os.fspath(self.path)!r}: {shard}:{entry['key']} "
                                     f"({entry['name']!r}) has shape {shapes.get(entry['key'])}, "
                                     f"the manifest says {want}")

    def __len__(self) -> int:
        """Clips per epoch."""
        return self._slot_offsets[-1]

    def clip_location(self, index: int) -> tuple[int, int, int]:
        """``(video, slot, start)`` of dataset index ``index`` (>= 0): the position in
        :attr:`videos`, the slot within the video and the clip's first state."""
        index = operator.index(index)
        if index < 0:
            raise IndexError(f"dataset index must be >= 0, got {index}")
        clip = index % len(self)
        video = bisect.bisect_right(self._slot_offsets, clip) - 1
        slot = clip - self._slot_offsets[video]
        slots = self._slot_offsets[video + 1] - self._slot_offsets[video]
        starts = self.videos[video]["num_states"] - self.states_per_clip + 1
        low, high = slot * starts // slots, (slot + 1) * starts // slots  # high > low: starts >= slots
        draw = _rng(self.seed, _START_STREAM, index).random()
        return video, slot, min(low + math.floor(draw * (high - low)), high - 1)

    def _handle(self, shard: str) -> Any:
        from safetensors import safe_open

        if self._pid != os.getpid():  # a forked worker: never share the parent's handles
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = safe_open(os.fspath(self.path / shard), framework="pt")
        return handle

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __getitem__(self, index: int) -> StateItem:
        """States of clip ``index``: float32 (num_frames // frames_per_state, N, D)."""
        video, _, start = self.clip_location(index)
        entry = self.videos[video]
        window = self._handle(entry["shard"]).get_slice(entry["key"])[start : start + self.states_per_clip]
        return {"states": window.float(), "index": operator.index(index)}


# ------------------------------------------------------------------------------------ command line


def add_encode_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of ``lam-fast encode`` to ``parser``."""
    from lam_fast.models.encoders import ENCODERS

    a = parser.add_argument
    a("--data", required=True, help="folder of videos, CSV list (a 'path' column), video file or "
      "WebDataset tar shards")
    a("--out", required=True, help="cache directory to write (new or empty; or an interrupted encode "
      "of the same settings, which resumes)")
    a("--encoder", required=True, choices=ENCODERS)
    a("--encoder-model", dest="encoder_model", help="vjepa2: local directory or hub id of the weights")
    a("--patch-size", dest="patch_size", type=int, default=8, help="pixels: patch side (default 8)")
    a("--image-size", dest="image_size", type=int, required=True, help="frame side in pixels")
    a("--fps", type=float, required=True, help="frames per second sampled from each video")
    a("--decoder", default="auto", choices=("auto", "pyav", "opencv", "dali"),
      help="video decoder (default auto: DALI on a GPU, else PyAV)")
    a("--device", default="cpu", help="device of the encoder (default cpu)")
    a("--dtype", default="bf16", choices=tuple(CACHE_DTYPES), help="storage dtype of the states "
      "(default bf16)")
    a("--batch-frames", dest="batch_frames", type=int, default=64, help="frames encoded at once (default 64)")
    a("--shard-size-mb", dest="shard_size_mb", type=float, default=1024,
      help="start a new shard file at this size in MiB (default 1024)")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def _encoder_options(args: argparse.Namespace) -> dict[str, Any]:
    """The encoder options of the flags (the mapping of TrainConfig.encoder_options())."""
    if args.encoder == "pixels":
        return {"patch_size": args.patch_size}
    if args.encoder == "vjepa2" and args.encoder_model:
        return {"model": args.encoder_model}
    return {}


def run_encode(args: argparse.Namespace) -> int:
    """Run ``lam-fast encode`` for parsed flags; print a summary. Returns the exit status."""
    from lam_fast.data.decoders import DecoderUnavailable

    try:
        out = encode_to_cache(
            args.data, args.out, encoder=args.encoder, image_size=args.image_size, fps=args.fps,
            encoder_options=_encoder_options(args), decoder=args.decoder, device=args.device,
            dtype=args.dtype, batch_frames=args.batch_frames, shard_size_mb=args.shard_size_mb,
            progress=args.progress,
        )
    except (ValueError, FileExistsError, DecoderUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    manifest = read_manifest(out)
    size = sum((out / shard).stat().st_size for shard in manifest["shards"])
    encoder = manifest["encoder"]
    print(f"wrote {os.fspath(out)}: {len(manifest['videos'])} videos, {manifest['num_states']} states of "
          f"{encoder['num_tokens']}x{encoder['dim']} ({encoder['name']}, {manifest['dtype']}), "
          f"{len(manifest['skipped'])} skipped, {size} bytes in {len(manifest['shards'])} shard(s)")
    for name, reason in manifest["skipped"][:20]:
        print(f"  skipped {name}: {reason}")
    if len(manifest["skipped"]) > 20:
        print(f"  ... and {len(manifest['skipped']) - 20} more (see {MANIFEST})")
    return 0


def encode_main(argv: Sequence[str] | None = None) -> int:
    """``lam-fast encode``: parse ``argv`` and encode (see :func:`encode_to_cache`)."""
    parser = argparse.ArgumentParser(
        prog="lam-fast encode",
        description="Encode videos once with a frozen encoder into a state cache that `lam-fast train "
                    "--data CACHE` reads instead of decoding and encoding video.")
    add_encode_arguments(parser)
    return run_encode(parser.parse_args(None if argv is None else list(argv)))

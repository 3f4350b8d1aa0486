"""Encoded-state caches, the reading side: the format, its manifest, and :class:`StateCacheDataset`.

``lam-fast encode`` (:func:`lam_fast.training.encode.encode_to_cache`, above the models because it
runs the frozen encoder) samples every usable video whole at ``fps`` from its first frame, encodes
it with a frozen encoder (:mod:`lam_fast.models.encoders`) and stores the states;
:class:`StateCacheDataset` then serves clips of consecutive states with the index scheme of
:mod:`lam_fast.data.sampling`, so training skips decoding and the encoder (for V-JEPA 2 by far the
most expensive part of a step). This module knows no model: the writer imports the format's names
from here.

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
  (:func:`lam_fast.models.encoders.normalize_encoder_options`), e.g. ``{"patch_size": 8}`` for
  ``pixels``.

An encode in progress keeps a ``progress.json`` and no manifest, and resumes when rerun (see
:mod:`lam_fast.training.encode`); :func:`read_manifest` says so for such a directory.
"""

from __future__ import annotations

import json
import math
import operator
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch.utils.data import Dataset

from lam_fast._moved import moved
from lam_fast.data.sampling import ClipSlots
from lam_fast.data.video import VideoRecord

__all__ = [
    "CACHE_DTYPES",
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "MANIFEST",
    "PROGRESS",
    "PROGRESS_FORMAT",
    "CachedVideo",
    "StateCacheDataset",
    "StateItem",
    "is_shard_file",
    "is_state_cache",
    "read_manifest",
    "shard_name",
]

# The writer and its command line moved up: they run the frozen encoder, which this reader never loads.
__getattr__ = moved(__name__, {
    "encode_to_cache": "lam_fast.training.encode",
    "add_encode_arguments": "lam_fast.cli.data",
    "run_encode": "lam_fast.cli.data",
    "encode_main": "lam_fast.cli.data",
})

CACHE_FORMAT = "lam_fast.state_cache"
CACHE_VERSION = 1
#: The manifest's file name: written last, so a directory without one is not a finished cache.
MANIFEST = "manifest.json"
#: The progress file of an unfinished encode, and its format tag.
PROGRESS = "progress.json"
PROGRESS_FORMAT = "lam_fast.state_cache.progress"
_SHARD_PREFIX = "states-"
_SHARD_SUFFIX = ".safetensors"

#: ``--dtype`` name -> storage dtype of the states.
CACHE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class StateItem(TypedDict):
    """One :class:`StateCacheDataset` item: float32 ``states`` (S', N, D) and its dataset ``index``."""

    states: torch.Tensor
    index: int


@dataclass(frozen=True)
class CachedVideo(VideoRecord):
    """One video of a state cache (a manifest ``videos`` entry): ``path`` is the entry's ``name``.

    Attributes:
        shard: the shard file holding its states.
        key: the tensor's name in the shard (``v00000123``).
        num_states: states encoded from the video.
    """

    shard: str
    key: str
    num_states: int

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> CachedVideo:
        """The record of a manifest entry ``{"name", "shard", "key", "num_states", "duration"}``."""
        return cls(path=entry["name"], duration=entry["duration"], shard=entry["shard"], key=entry["key"],
                   num_states=entry["num_states"])


# ------------------------------------------------------------------------------------ file names


def shard_name(number: int) -> str:
    """The file name of shard ``number``: ``states-00012.safetensors``."""
    return f"{_SHARD_PREFIX}{number:05d}{_SHARD_SUFFIX}"


def is_shard_file(name: str) -> bool:
    """Whether file name ``name`` is a shard's (``states-*.safetensors``)."""
    return name.startswith(_SHARD_PREFIX) and name.endswith(_SHARD_SUFFIX)


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


# ------------------------------------------------------------------------------------ dataset


class StateCacheDataset(Dataset):
    """Clips of ``num_frames`` frames from a state cache: ``num_frames // frames_per_state`` states.

    The index scheme of :mod:`lam_fast.data.sampling` (as in
    :class:`~lam_fast.data.dataset.VideoClipDataset`): an epoch has
    ``len(self)`` clips, any index >= 0 is valid and ``index // len(self)`` is its epoch. Video
    ``v`` contributes ``n = max(1, floor(num_states_v / S))`` slots (``S`` states per clip); of the
    ``V = num_states_v - S + 1`` valid start states, slot ``k`` owns ``[k * V // n, (k + 1) * V // n)``
    (never empty, as ``V >= n``), and the start is drawn uniformly among them by a generator
    seeded with ``(seed, stream, index)``: the same index always gives the same clip, each epoch
    new starts.
    Videos with fewer than ``S`` states are skipped with a warning; :attr:`skipped` lists them
    after the videos the encode skipped, as ``(name, reason)``. :attr:`videos` holds the others as
    :class:`CachedVideo` records (``path``, ``duration`` like the video dataset's
    :class:`~lam_fast.data.video.VideoInfo`, both :class:`~lam_fast.data.video.VideoRecord`).

    Items are read lazily: only the clip's window of states, through one safetensors handle per
    shard opened on first use in each process (DataLoader workers open their own).

    Args:
        path: the cache directory (written by :func:`lam_fast.training.encode.encode_to_cache`).
        num_frames: frames per clip; a positive multiple of the encoder's ``frames_per_state``.
        seed: seed of the start draws (>= 0).
        expect: settings the cache must have, from ``encoder``, ``encoder_options``,
            ``image_size``, ``fps``, ``dtype``, ``frames_per_state``; a mismatch raises.
            ``encoder_options`` are compared with the manifest's as given: pass them with the
            defaults filled in (:func:`lam_fast.models.encoders.normalize_encoder_options`, as
            ``TrainConfig.encoder_options()`` does).

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
        self.videos: list[CachedVideo] = []
        for video in map(CachedVideo.from_entry, self.manifest["videos"]):
            if video.num_states < self.states_per_clip:
                reason = f"shorter than one clip ({video.num_states} states < {self.states_per_clip})"
                self.skipped.append((video.path, reason))
                warnings.warn(f"StateCacheDataset skips {video.path!r}: {reason}", stacklevel=2)
            else:
                self.videos.append(video)
        if not self.videos:
            raise ValueError(f"no video in the state cache {os.fspath(self.path)!r} has the "
                             f"{self.states_per_clip} states of one clip of {num_frames} frames "
                             f"({len(self.skipped)} skipped)")
        self._check_shards()
        self._slots = ClipSlots(max(1, video.num_states // self.states_per_clip) for video in self.videos)
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()

    def _check_shards(self) -> None:
        """Every kept video's tensor exists with the manifest's shape (reads the shard headers only)."""
        from safetensors import safe_open

        by_shard: dict[str, list[CachedVideo]] = {}
        for video in self.videos:
            by_shard.setdefault(video.shard, []).append(video)
        for shard, videos in by_shard.items():
            file = self.path / shard
            if not file.is_file():
                raise ValueError(f"state cache {os.fspath(self.path)!r}: shard {shard!r} is missing")
            try:
                with safe_open(os.fspath(file), framework="pt") as handle:
                    keys = set(handle.keys())
                    shapes = {video.key: handle.get_slice(video.key).get_shape()
                              for video in videos if video.key in keys}
            except Exception as error:  # OSError, or safetensors' SafetensorError for a corrupt header
                raise ValueError(f"state cache {os.fspath(self.path)!r}: cannot read shard {shard!r}: "
                                 f"{error}") from error
            for video in videos:
                want = [video.num_states, *self.state_shape]
                if shapes.get(video.key) != want:
                    raise ValueError(f"state cache {os.fspath(self.path)!r}: {shard}:{video.key} "
                                     f"({video.path!r}) has shape {shapes.get(video.key)}, "
                                     f"the manifest says {want}")

    def __len__(self) -> int:
        """Clips per epoch."""
        return len(self._slots)

    def clip_location(self, index: int) -> tuple[int, int, int]:
        """``(video, slot, start)`` of dataset index ``index`` (>= 0): the position in
        :attr:`videos`, the slot within the video and the clip's first state."""
        video, slot, slots, draw = self._slots.locate(index, self.seed)
        starts = self.videos[video].num_states - self.states_per_clip + 1
        low, high = slot * starts // slots, (slot + 1) * starts // slots  # high > low: starts >= slots
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
        record = self.videos[video]
        window = self._handle(record.shard).get_slice(record.key)[start : start + self.states_per_clip]
        return {"states": window.float(), "index": operator.index(index)}

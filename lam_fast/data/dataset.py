"""Clip datasets over folders, CSV lists or lists of video files, and data-parallel clip sampling.

Index scheme shared by :class:`VideoClipDataset` and :class:`ClipBatchSampler`: an epoch has
``N = len(dataset)`` clips; dataset index ``i`` (any non-negative int) is clip ``i % N`` of
epoch ``i // N``. The clip picks a video and a slot (a stratum of the video's valid start
times); the epoch only changes the random start drawn inside the slot. Every random choice comes
from a generator seeded by ``(seed, ...)``, so any batch can be regenerated from its indices,
in any process, with any number of workers.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import csv
import functools
import gc
import math
import operator
import os
import queue
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lam_fast.data.decoders import ClipDecoder, ClipRequest, make_decoder
from lam_fast.data.video import TarMember, VideoDecodeError, VideoInfo, probe_video, video_name

__all__ = [
    "VIDEO_EXTENSIONS",
    "BatchedClipLoader",
    "ClipBatchSampler",
    "ClipItem",
    "VideoClipDataset",
    "collate_clips",
    "make_dataloader",
    "resolve_sources",
]

#: File extensions (lower case) that :func:`resolve_sources` collects from a folder.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")

# Domain tags in the seed sequences, so the sampler's permutation of epoch e and the dataset's
# start draw for index e never share a random stream.
_START_STREAM = 0
_PERMUTATION_STREAM = 1

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


class ClipItem(TypedDict):
    """One dataset item: ``video`` uint8 (T, 3, S, S) RGB and the dataset ``index`` it came from."""

    video: torch.Tensor
    index: int


def resolve_sources(source: Source) -> list[str | TarMember]:
    """List the video files named by ``source``.

    Args:
        source: one of
            - WebDataset tar shards: a ``.tar`` file, a brace pattern such as
              ``shards/train-{000000..000099}.tar``, or a folder holding only ``.tar`` files
              (see :mod:`lam_fast.data.shards`); each video member becomes a
              :class:`~lam_fast.data.video.TarMember`;
            - a folder: every file below it (recursively) with an extension in
              :data:`VIDEO_EXTENSIONS` (case-insensitive), sorted;
            - a ``.csv`` file: one video per row, the path in the first column, or in the column
              headed ``path`` when the first row has a cell ``path`` (that row is then the header);
              other columns and blank rows are ignored, relative paths are resolved against the
              CSV's folder;
            - a single video file (any extension);
            - a list (or other sequence) of paths, returned as given.

    Returns:
        Paths as strings (or tar members). Paths listed by a CSV or a sequence are not checked here:
        :class:`VideoClipDataset` skips the missing ones with a warning.

    Raises:
        ValueError: the folder or file does not exist, or the source names no video.
    """
    if isinstance(source, (str, os.PathLike)):
        from lam_fast.data.shards import is_shard_source, shard_members

        if is_shard_source(source):
            return shard_members(source)
        path = Path(source)
        if path.is_dir():
            found = sorted(
                os.path.join(folder, name)
                for folder, _, names in os.walk(path)
                for name in names
                if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
            )
            if not found:
                raise ValueError(
                    f"video folder {os.fspath(path)!r} contains no file with a video extension "
                    f"{VIDEO_EXTENSIONS}"
                )
            return found
        if not path.is_file():
            raise ValueError(f"video source {os.fspath(path)!r} does not exist")
        if path.suffix.lower() == ".csv":
            return _read_csv(path)
        return [os.fspath(path)]
    paths = [os.fspath(p) for p in source]
    if not paths:
        raise ValueError("the list of video paths is empty")
    return paths


def _read_csv(path: Path) -> list[str]:
    """Video paths listed in a CSV file (see :func:`resolve_sources`)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: tolerate a BOM
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    column = 0
    if rows:
        header = [cell.strip().lower() for cell in rows[0]]
        if "path" in header:
            column = header.index("path")
            rows = rows[1:]
    paths = [
        os.fspath(path.parent / row[column].strip())  # an absolute entry replaces the folder
        for row in rows
        if len(row) > column and row[column].strip()
    ]
    if not paths:
        raise ValueError(f"video list {os.fspath(path)!r} names no video")
    return paths


#: Threads probing files at start-up: probing is I/O and FFmpeg work that releases the GIL.
_PROBE_THREADS = 8


def _probe_all(paths: Sequence[str | TarMember]) -> list[VideoInfo | VideoDecodeError]:
    """:func:`probe_video` of every path, in order, several at a time; a failure is returned."""

    def probe(path: str | TarMember) -> VideoInfo | VideoDecodeError:
        try:
            return probe_video(path)
        except VideoDecodeError as error:
            return error

    if len(paths) < 2:
        return [probe(path) for path in paths]
    with concurrent.futures.ThreadPoolExecutor(min(_PROBE_THREADS, len(paths))) as pool:
        return list(pool.map(probe, paths))


def _rng(*key: int) -> np.random.Generator:
    """A numpy generator seeded by the integer tuple ``key`` (same key, same stream)."""
    return np.random.default_rng(list(key))


class VideoClipDataset(Dataset):
    """Fixed-rate clips of ``num_frames`` frames at ``fps``, ``image_size`` square, from videos.

    Construction probes every file (:func:`~lam_fast.data.video.probe_video`). A file that fails
    (missing, unreadable, empty, truncated) is skipped with one warning and recorded in
    :attr:`skipped` as ``(path, reason)``. **Short-video policy:** a clip covers
    ``(num_frames - 1) / fps`` seconds from its first to its last frame; a video shorter than that
    is skipped the same way with the reason ``"shorter than one clip (X s < Y s)"``, rather than
    padded or sampled at a lower rate, so every clip has the requested frame rate.

    An epoch has ``len(self)`` clips: video ``v`` contributes ``max(1, floor(duration_v /
    clip_span))`` slots, ``clip_span = num_frames / fps``. Slot ``k`` of ``n`` owns the k-th of
    ``n`` equal parts of the video's valid start range ``[0, duration - (num_frames - 1) / fps]``;
    the clip's start is drawn uniformly in that part by a generator seeded with
    ``(seed, index)``, so an index always gives the same clip and each epoch sees new starts.

    ``__getitem__`` accepts any index >= 0 (``index // len(self)`` is the epoch) and returns a
    :class:`ClipItem`, or None when the clip cannot be decoded at read time: that warns once per
    file and increments :attr:`read_failures` (a per-process counter: each DataLoader worker
    counts its own). Indices never run out, so do not iterate the dataset directly.

    Files the decoder cannot read (a codec DALI's CPU decoder lacks, a tar member for OpenCV)
    are skipped at construction like unreadable ones, with the decoder's reason.

    Args:
        source: a folder, a CSV file, a video file, WebDataset tar shards or a list of paths
            (see :func:`resolve_sources`).
        num_frames: T, frames per clip (>= 1).
        fps: clip frame rate (> 0).
        image_size: S, output side in pixels (>= 1).
        seed: seed of the start-time draws (>= 0).
        decoder: a decoder name (see :mod:`lam_fast.data.decoders`; ``auto`` = the CPU choice)
            or a :class:`~lam_fast.data.decoders.ClipDecoder`.

    Raises:
        ValueError: invalid arguments, or no usable video (the message counts the skipped files
            and gives their reasons).
    """

    def __init__(
        self,
        source: Source,
        *,
        num_frames: int = 16,
        fps: float = 4.0,
        image_size: int = 64,
        seed: int = 0,
        decoder: str | ClipDecoder = "auto",
    ) -> None:
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be an int >= 1, got {image_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.num_frames = num_frames
        self.fps = float(fps)
        self.image_size = image_size
        self.seed = seed
        self.decoder = make_decoder(decoder) if isinstance(decoder, str) else decoder
        #: Time from a clip's first to its last frame; shorter videos are skipped.
        self.clip_extent = (num_frames - 1) / self.fps
        self.videos: list[VideoInfo] = []
        self.skipped: list[tuple[str, str]] = []
        self.read_failures = 0
        self._warned_read_failures: set[str] = set()

        paths = resolve_sources(source)
        for path, info in zip(paths, _probe_all(paths), strict=True):
            if isinstance(info, VideoDecodeError):
                reason = str(info)
            else:
                reason = self.decoder.unsupported(info)
                if reason is None and info.duration < self.clip_extent:
                    reason = f"shorter than one clip ({info.duration:.3f} s < {self.clip_extent:.3f} s)"
                if reason is None:
                    self.videos.append(info)
                    continue
            name = video_name(path)
            self.skipped.append((name, reason))
            warnings.warn(f"VideoClipDataset skips {name!r}: {reason}", stacklevel=2)
        if not self.videos:
            shown = "; ".join(f"{path!r}: {reason}" for path, reason in self.skipped[:10])
            more = f"; and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
            where = repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) \
                else f"the {len(paths)} listed paths"
            raise ValueError(
                f"no usable video in {where}: all {len(self.skipped)} skipped ({shown}{more})"
            )
        # slot_offsets[v] = index of video v's first slot; slot_offsets[-1] = clips per epoch.
        self._slot_offsets = [0]
        for info in self.videos:
            slots = max(1, math.floor(Fraction(info.duration) * Fraction(self.fps) / num_frames))
            self._slot_offsets.append(self._slot_offsets[-1] + slots)

    def __len__(self) -> int:
        """Clips per epoch."""
        return self._slot_offsets[-1]

    def clip_location(self, index: int) -> tuple[VideoInfo, float]:
        """The video and start time (seconds) of dataset index ``index`` (>= 0)."""
        index = operator.index(index)
        if index < 0:
            raise IndexError(f"dataset index must be >= 0, got {index}")
        clip = index % len(self)
        video = bisect.bisect_right(self._slot_offsets, clip) - 1
        info = self.videos[video]
        slot = clip - self._slot_offsets[video]
        slots = self._slot_offsets[video + 1] - self._slot_offsets[video]
        stratum = (info.duration - self.clip_extent) / slots
        start = (slot + _rng(self.seed, _START_STREAM, index).random()) * stratum
        return info, start

    def request(self, index: int) -> ClipRequest:
        """What to decode for dataset index ``index`` (>= 0)."""
        info, start = self.clip_location(index)
        return ClipRequest(info, start, self.num_frames, self.fps, self.image_size)

    def record_failure(self, info: VideoInfo, error: VideoDecodeError) -> None:
        """Count a clip that failed to decode; warn once per file."""
        self.read_failures += 1
        if info.path not in self._warned_read_failures:
            self._warned_read_failures.add(info.path)
            warnings.warn(f"VideoClipDataset cannot read a clip of {info.path!r}: {error}", stacklevel=3)

    def __getitem__(self, index: int) -> ClipItem | None:
        """Decode clip ``index`` (see the class docstring); None if it cannot be decoded."""
        request = self.request(index)
        try:
            video = self.decoder.decode(request)
        except VideoDecodeError as error:
            self.record_failure(request.info, error)
            return None
        return {"video": video, "index": operator.index(index)}


def collate_clips(
    batch: Sequence[ClipItem | None],
    clip_shape: tuple[int, ...] | None = None,
    key: str = "video",
) -> dict[str, torch.Tensor | int]:
    """Stack dataset items into a batch, dropping the None items of failed reads.

    Args:
        batch: items from :class:`VideoClipDataset` (None for a failed read), or from
            :class:`~lam_fast.data.cache.StateCacheDataset` (``key="states"``).
        clip_shape: shape of one item's ``key`` tensor, used only to shape an empty batch;
            (0, 3, 0, 0) when None.
        key: the item entry to stack: ``video`` (uint8 clips) or ``states`` (encoded clips).

    Returns:
        ``key``: the stacked (B, ...) tensor, B = number of items kept (0 if all failed);
        ``index``: int64 (B,) dataset indices; ``skipped``: int, how many items were dropped.
    """
    kept = [item for item in batch if item is not None]
    if kept:
        stacked = torch.stack([item[key] for item in kept])
    else:
        dtype = torch.uint8 if key == "video" else torch.float32
        stacked = torch.empty((0, *(clip_shape or (0, 3, 0, 0))), dtype=dtype)
    index = torch.tensor([item["index"] for item in kept], dtype=torch.int64)
    return {key: stacked, "index": index, "skipped": len(batch) - len(kept)}


class ClipBatchSampler(Sampler[list[int]]):
    """Infinite, deterministic batches of dataset indices for data-parallel training.

    The global sample stream is one sequence: position ``p`` is clip ``perm_e[p % num_clips]``
    of epoch ``e = p // num_clips``, where ``perm_e`` is a permutation seeded by ``(seed, e)``;
    the yielded dataset index is ``e * num_clips + clip`` (see :class:`VideoClipDataset`).
    Step ``s`` on rank ``r`` takes positions ``(s * world_size + r) * batch_size + j`` for
    ``j < batch_size``, so the ranks' batches of one step are consecutive slices of the stream;
    when ``num_clips`` is a multiple of ``world_size * batch_size`` each epoch's clips are covered
    exactly once across ranks. Iteration starts at ``start_step``: a resumed run passes the
    number of steps already taken and continues the same stream.

    Args:
        num_clips: clips per epoch (``len(dataset)``, >= 1).
        batch_size: clips per rank per step (>= 1).
        seed: permutation seed (>= 0).
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: number of data-parallel processes (>= 1).
        start_step: first step to yield (>= 0).
    """

    def __init__(
        self,
        num_clips: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        for name, value, low in (("num_clips", num_clips, 1), ("batch_size", batch_size, 1),
                                 ("seed", seed, 0), ("world_size", world_size, 1),
                                 ("start_step", start_step, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        super().__init__()
        self.num_clips = num_clips
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        """The clip order of ``epoch``: a permutation of ``range(num_clips)`` (int64)."""
        return _rng(self.seed, _PERMUTATION_STREAM, epoch).permutation(self.num_clips)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the batches of steps ``start_step, start_step + 1, ...`` for this rank, forever."""
        epoch, permutation = -1, np.empty(0, dtype=np.int64)
        step = self.start_step
        while True:
            first = (step * self.world_size + self.rank) * self.batch_size
            batch = []
            for position in range(first, first + self.batch_size):
                position_epoch, slot = divmod(position, self.num_clips)
                if position_epoch != epoch:
                    epoch, permutation = position_epoch, self.epoch_permutation(position_epoch)
                batch.append(epoch * self.num_clips + int(permutation[slot]))
            yield batch
            step += 1


def _decode_batch(dataset: VideoClipDataset, indices: list[int]) -> dict[str, torch.Tensor | int]:
    """One batch through the dataset's batched decoder, collated like the DataLoader's."""
    requests = [dataset.request(index) for index in indices]
    items: list[ClipItem | None] = []
    for index, request, result in zip(indices, requests, dataset.decoder.decode_batch(requests), strict=True):
        if isinstance(result, VideoDecodeError):
            dataset.record_failure(request.info, result)
            items.append(None)
        else:
            items.append({"video": result, "index": index})
    batch = collate_clips(items, (dataset.num_frames, 3, dataset.image_size, dataset.image_size))
    batch["video"] = batch["video"].to(dataset.decoder.device)
    return batch


def _produce(dataset: VideoClipDataset, sampler: ClipBatchSampler, ready: queue.Queue,
             stop: threading.Event) -> None:
    """The prefetch thread of :class:`BatchedClipLoader`: decode batches into ``ready`` until
    ``stop``; an error is handed over in the queue. Holds no reference to the loader itself."""

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for indices in sampler:
            if stop.is_set() or not put((_decode_batch(dataset, indices), None)):
                return
    except BaseException as error:  # handed to the consumer, which raises it
        put((None, error))


class BatchedClipLoader:
    """Batches of a :class:`VideoClipDataset` whose decoder is batched (DALI), prefetched.

    The same sampler and collation as :func:`make_dataloader`'s DataLoader, but each batch is
    one :meth:`~lam_fast.data.decoders.ClipDecoder.decode_batch` call made by a background
    thread that stays ``prefetch`` batches ahead of the consumer, so decoding (on the GPU for
    DALI) overlaps the training step. The decoder is only ever used from that thread (a new
    iteration first stops and joins the previous one's). Clips come out on the decoder's device
    (no host round trip for GPU decoding). An error in the thread is raised in the consumer at
    the next batch.

    Iterating again starts a new stream from ``sampler.start_step``. The thread stops when its
    iterator is closed or garbage-collected, or at :meth:`close` (which also shuts down the
    decoder's pipelines, when it has a ``close``).
    """

    def __init__(self, dataset: VideoClipDataset, sampler: ClipBatchSampler, prefetch: int = 2) -> None:
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
        self.dataset = dataset
        self.sampler = sampler
        self.prefetch = prefetch
        self._running: tuple[threading.Event, threading.Thread] | None = None

    def _stop_thread(self) -> None:
        if self._running is not None:
            stop, thread = self._running
            stop.set()
            thread.join()
            self._running = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | int]]:
        self._stop_thread()
        stop, ready = threading.Event(), queue.Queue(maxsize=self.prefetch)
        thread = threading.Thread(target=_produce, args=(self.dataset, self.sampler, ready, stop),
                                  name="lam_fast-decode", daemon=True)
        thread.start()
        self._running = (stop, thread)
        return _consume(ready, stop)

    def close(self) -> None:
        """Stop and join the prefetching thread, and release the decoder's resources."""
        self._stop_thread()
        close = getattr(self.dataset.decoder, "close", None)
        if close is not None:
            close()


def _consume(ready: queue.Queue, stop: threading.Event) -> Iterator[dict[str, torch.Tensor | int]]:
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            yield batch
    finally:
        stop.set()


def make_dataloader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    start_step: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> DataLoader | BatchedClipLoader:
    """An infinite loader (it has no ``len``) of collated clip batches for one rank.

    Batches come from :class:`ClipBatchSampler` (same arguments) and :func:`collate_clips`, so
    they are identical whatever ``num_workers``. For a :class:`VideoClipDataset` with a per-clip
    decoder and for a state cache this is a DataLoader; with workers, they persist across
    iterations and each prefetches ``prefetch_factor`` batches. A batched decoder (DALI) gets a
    :class:`BatchedClipLoader` instead (``num_workers`` and ``pin_memory`` do not apply: DALI
    runs its own thread pool, and GPU clips need no pinning).

    Args:
        dataset: a :class:`VideoClipDataset` or :class:`~lam_fast.data.cache.StateCacheDataset`.
        batch_size: clips per rank per step (failed reads make a batch smaller; see ``skipped``).
        seed: sampler seed (the dataset's own seed sets the start times).
        rank, world_size, start_step: see :class:`ClipBatchSampler`.
        num_workers: decoding processes (0 decodes in this process).
        pin_memory: pin batches for faster host-to-GPU copies.
        prefetch_factor: batches each worker (or the batched loader) prepares ahead.
    """
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    sampler = ClipBatchSampler(len(dataset), batch_size, seed=seed, rank=rank,
                               world_size=world_size, start_step=start_step)
    decoder = getattr(dataset, "decoder", None)
    if decoder is not None and decoder.batched:
        return BatchedClipLoader(dataset, sampler, prefetch=prefetch_factor)
    if num_workers > 0 and "nvidia.dali" in sys.modules:
        # Workers are forked: a DALI pipeline left as cyclic garbage here would be finalised in a
        # worker, joining threads that do not exist there (a crash). Collect it before the fork.
        gc.collect()
    if isinstance(dataset, VideoClipDataset):
        collate = functools.partial(
            collate_clips, clip_shape=(dataset.num_frames, 3, dataset.image_size, dataset.image_size))
    else:  # a state cache
        clip_shape = (dataset.num_frames // dataset.frames_per_state, *dataset.state_shape)
        collate = functools.partial(collate_clips, clip_shape=clip_shape, key="states")
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )

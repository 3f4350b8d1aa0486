"""Clip datasets over video sources, and the loaders that batch them for data-parallel training.

:class:`VideoClipDataset` decodes fixed-rate clips from the videos of a source
(:mod:`lam_fast.data.sources`), with the index scheme of :mod:`lam_fast.data.sampling`;
:func:`make_dataloader` batches it, or a :class:`~lam_fast.data.cache.StateCacheDataset`, with
:class:`~lam_fast.data.sampling.ClipBatchSampler`. ``VIDEO_EXTENSIONS``, ``Source``,
``resolve_sources`` and ``ClipBatchSampler`` are importable from here too, where they used to live.
"""

from __future__ import annotations

import concurrent.futures
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
from typing import TypedDict

import torch
from torch.utils.data import DataLoader, Dataset

from lam_fast.data.decoders import ClipDecoder, ClipRequest, make_decoder
from lam_fast.data.sampling import ClipBatchSampler, ClipSlots
from lam_fast.data.sources import VIDEO_EXTENSIONS, NoVideoSource, Source, resolve_sources
from lam_fast.data.video import TarMember, VideoDecodeError, VideoInfo, probe_video, video_name

__all__ = [
    "VIDEO_EXTENSIONS",
    "BatchedClipLoader",
    "ClipBatchSampler",
    "ClipItem",
    "VideoClipDataset",
    "collate_clips",
    "Source",
    "make_dataloader",
    "resolve_sources",
]

class ClipItem(TypedDict):
    """One dataset item: ``video`` uint8 (T, 3, S, S) RGB and the dataset ``index`` it came from."""

    video: torch.Tensor
    index: int


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
            raise NoVideoSource(  # a UserError (and a ValueError): the command lines print one line
                f"no usable video in {where}: all {len(self.skipped)} skipped ({shown}{more})"
            )
        self._slots = ClipSlots(max(1, math.floor(Fraction(info.duration) * Fraction(self.fps) / num_frames))
                                for info in self.videos)

    def __len__(self) -> int:
        """Clips per epoch."""
        return len(self._slots)

    def clip_location(self, index: int) -> tuple[VideoInfo, float]:
        """The video and start time (seconds) of dataset index ``index`` (>= 0)."""
        where = self._slots.locate(index, self.seed)
        info = self.videos[where.video]
        stratum = (info.duration - self.clip_extent) / where.slots
        return info, (where.slot + where.draw) * stratum

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

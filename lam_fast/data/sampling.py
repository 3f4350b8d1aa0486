"""The index scheme every clip dataset shares, and the data-parallel batch sampler over it.

An epoch has ``N = len(dataset)`` clips; dataset index ``i`` (any non-negative int) is clip
``i % N`` of epoch ``i // N``. Each video owns a run of consecutive clips, its *slots* (strata of
its valid start times); the epoch only changes the random start drawn inside the slot. Every random
choice comes from a generator seeded by ``(seed, stream, ...)``, so any batch can be regenerated
from its indices, in any process, with any number of workers.

:class:`~lam_fast.data.dataset.VideoClipDataset` (start times in seconds) and
:class:`~lam_fast.data.cache.StateCacheDataset` (start states) both locate an index with
:class:`ClipSlots`; :class:`ClipBatchSampler` draws the indices.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
from torch.utils.data import Sampler

__all__ = ["PERMUTATION_STREAM", "START_STREAM", "ClipBatchSampler", "ClipSlots", "Slot", "rng"]

# Domain tags in the seed sequences, so the sampler's permutation of epoch e and the dataset's
# start draw for index e never share a random stream.
START_STREAM = 0
PERMUTATION_STREAM = 1


def rng(*key: int) -> np.random.Generator:
    """A numpy generator seeded by the integer tuple ``key`` (same key, same stream)."""
    return np.random.default_rng(list(key))


class Slot(NamedTuple):
    """Where a dataset index falls: ``video`` (position in the dataset's ``videos``), its ``slot``
    of the video's ``slots``, and ``draw``, the index's uniform draw in [0, 1) for the start."""

    video: int
    slot: int
    slots: int
    draw: float


class ClipSlots:
    """The clips of one epoch: video ``v`` owns ``slots_per_video[v]`` (>= 1) consecutive slots."""

    def __init__(self, slots_per_video: Iterable[int]) -> None:
        # offsets[v] = index of video v's first slot; offsets[-1] = clips per epoch.
        self.offsets = [0]
        for slots in slots_per_video:
            self.offsets.append(self.offsets[-1] + slots)

    def __len__(self) -> int:
        """Clips per epoch."""
        return self.offsets[-1]

    def locate(self, index: int, seed: int) -> Slot:
        """The slot of dataset index ``index`` (>= 0) and its start draw, from ``(seed, index)``.

        Raises:
            IndexError: ``index`` < 0.
        """
        index = operator.index(index)
        if index < 0:
            raise IndexError(f"dataset index must be >= 0, got {index}")
        clip = index % len(self)
        video = bisect.bisect_right(self.offsets, clip) - 1
        slot = clip - self.offsets[video]
        slots = self.offsets[video + 1] - self.offsets[video]
        return Slot(video, slot, slots, rng(seed, START_STREAM, index).random())


class ClipBatchSampler(Sampler[list[int]]):
    """Infinite, deterministic batches of dataset indices for data-parallel training.

    The global sample stream is one sequence: position ``p`` is clip ``perm_e[p % num_clips]``
    of epoch ``e = p // num_clips``, where ``perm_e`` is a permutation seeded by ``(seed, e)``;
    the yielded dataset index is ``e * num_clips + clip`` (see the module docstring).
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
        return rng(self.seed, PERMUTATION_STREAM, epoch).permutation(self.num_clips)

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

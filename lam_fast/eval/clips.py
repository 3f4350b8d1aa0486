"""The clips an evaluation runs on: the first N decodable clips of a dataset at a run's length,
frame rate and size, and their encoder states.

Shared by ``lam-fast eval`` and ``lam-fast train-decoder`` so both see the same clips for the
same ``(data, seed)``: clip index i of the dataset, in order, skipping unreadable files. The
settings are passed explicitly (a run's ``num_frames`` / ``fps`` / ``image_size``), so this
module knows no config or run layout.
"""

from __future__ import annotations

import torch


class TooFewClips(ValueError):
    """Fewer clips decoded than the evaluation needs (the message counts slots and skipped files)."""


def load_clips(data: str, clips: int, seed: int, *, num_frames: int, fps: float, image_size: int,
               minimum: int = 2) -> tuple[list[torch.Tensor], list[str]]:
    """Up to ``clips`` decodable clips of ``num_frames`` frames at ``fps`` and ``image_size`` from
    ``data`` (clip index i of the dataset, start-time seed ``seed``; unreadable files are skipped
    and counted) and the file each came from. :class:`TooFewClips` naming ``data`` when fewer than
    ``minimum`` decode."""
    from lam_fast.data import VideoClipDataset

    dataset = VideoClipDataset(data, num_frames=num_frames, fps=fps, image_size=image_size, seed=seed)
    videos, names = [], []
    for index in range(len(dataset)):
        if len(videos) == clips:
            break
        item = dataset[index]
        if item is None:  # unreadable: skipped and counted by the dataset
            continue
        videos.append(item["video"])
        names.append(str(dataset.clip_location(index)[0].ref))
    if len(videos) < minimum:
        raise TooFewClips(f"need at least {minimum} decodable clips in {data}, found {len(videos)} "
                          f"({len(dataset)} clip slots, {len(dataset.skipped)} files skipped)")
    return videos, names


@torch.no_grad()
def encode_clips(encoder, videos: list[torch.Tensor], device) -> torch.Tensor:
    """The encoder states of ``videos`` as one batch on ``device``: (B, T / frames_per_state, N, C)."""
    return encoder.encode(torch.stack(videos).to(device))

"""The clip decoder interface: a :class:`ClipRequest` in, a uint8 ``(T, 3, S, S)`` RGB clip out.

Every decoder turns a :class:`ClipRequest` (a probed video, a start time, a frame count, a clip
frame rate and an output size) into a uint8 ``(T, 3, S, S)`` RGB clip: frames picked by the
nearest-frame rule of :mod:`lam_fast.data.video`, resized so the shorter side is ``S``
(antialiased) and centre-cropped. The backends live one per module next to this one
(:mod:`~lam_fast.data.decoders.pyav`, :mod:`~lam_fast.data.decoders.opencv`,
:mod:`~lam_fast.data.decoders.dali`); :mod:`~lam_fast.data.decoders.registry` chooses among them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lam_fast.data.video import VideoDecodeError, VideoInfo

__all__ = ["ClipDecoder", "ClipRequest", "DecoderUnavailable"]


class DecoderUnavailable(RuntimeError):
    """A decoder that was asked for by name cannot run here; the message says why."""


@dataclass(frozen=True)
class ClipRequest:
    """One clip to decode: ``num_frames`` frames at ``fps`` from ``start`` seconds of ``info``."""

    info: VideoInfo
    start: float
    num_frames: int
    fps: float
    image_size: int


class ClipDecoder(abc.ABC):
    """A clip decoder backend.

    Attributes:
        name: the backend's name (a key of :data:`DECODERS`).
        device: where decoded clips live (``cpu`` for the CPU decoders).
        batched: True when :meth:`decode_batch` is the efficient entry point (one call per batch,
            in the training process, as DALI needs); False for per-clip decoders, which run
            inside DataLoader workers.
    """

    name: str = ""
    batched: bool = False

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    def unsupported(self, info: VideoInfo) -> str | None:
        """Why this decoder cannot read ``info`` (a codec or storage it lacks), else None."""
        return None

    @abc.abstractmethod
    def decode(self, request: ClipRequest) -> torch.Tensor:
        """Decode one clip: uint8 ``(T, 3, S, S)`` on :attr:`device`.

        Raises:
            VideoDecodeError: the clip cannot be produced (the message says why).
        """

    def decode_batch(self, requests: Sequence[ClipRequest]) -> list[torch.Tensor | VideoDecodeError]:
        """Decode several clips; a clip that fails gives its :class:`VideoDecodeError` instead."""
        results: list[torch.Tensor | VideoDecodeError] = []
        for request in requests:
            try:
                results.append(self.decode(request))
            except VideoDecodeError as error:
                results.append(error)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={str(self.device)!r})"

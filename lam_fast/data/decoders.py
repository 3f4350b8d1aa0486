"""Clip decoders: one interface, several backends, chosen by name (``--decoder``) or ``auto``.

Every decoder turns a :class:`ClipRequest` (a probed video, a start time, a frame count, a clip
frame rate and an output size) into a uint8 ``(T, 3, S, S)`` RGB clip: frames picked by the
nearest-frame rule of :mod:`lam_fast.data.video`, resized so the shorter side is ``S``
(antialiased) and centre-cropped. Backends:

- ``pyav``: PyAV (FFmpeg) on the CPU, timestamp-exact, any codec FFmpeg decodes, plain files and
  tar members. One seek per clip; only the chosen frames are converted (swscale does YUV->RGB
  and the resize in one pass).
- ``opencv``: OpenCV's FFmpeg backend on the CPU, frames addressed by index
  (:func:`~lam_fast.data.video.frame_indices`); plain files only.
- ``dali``: NVIDIA DALI (:mod:`lam_fast.data.dali`): NVDEC on a GPU with resize and crop on the
  GPU, or DALI's CPU decoder, which reads only VP8, VP9 and MJPEG. Batched: one pipeline run
  decodes a whole batch of clips.

``auto`` picks ``dali`` on a CUDA device when DALI imports (with PyAV as its fallback for the
codecs and clips DALI cannot decode, so ``auto`` trains on the same videos everywhere), else
``pyav`` (the fastest CPU decoder measured here, see perf/bench_decode.py), else ``opencv``.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lam_fast.data.video import (
    VideoDecodeError,
    VideoInfo,
    check_clip_args,
    decode_clip,
    frame_indices,
    resized_size,
)

__all__ = [
    "DECODERS",
    "ClipDecoder",
    "ClipRequest",
    "DecoderUnavailable",
    "auto_decoder",
    "decoder_status",
    "make_decoder",
]


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


class PyAVDecoder(ClipDecoder):
    """PyAV (FFmpeg) CPU decoding through :func:`~lam_fast.data.video.decode_clip`."""

    name = "pyav"

    def decode(self, request: ClipRequest) -> torch.Tensor:
        return decode_clip(request.info.ref, request.start, request.num_frames, request.fps,
                           request.image_size)


def _resize_crop_cv2(cv2, image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` (area filter: antialiased when shrinking), then centre crop."""
    height, width = image.shape[:2]
    new_w, new_h = resized_size(width, height, size)
    shrinking = new_w < width
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[top : top + size, left : left + size]


class OpenCVDecoder(ClipDecoder):
    """OpenCV (``cv2.VideoCapture``, FFmpeg backend) CPU decoding by frame index.

    Seeks once to the first frame of the clip (``CAP_PROP_POS_FRAMES``), then ``grab()``s forward
    and converts only the chosen frames. Frame numbers come from
    :func:`~lam_fast.data.video.frame_indices`, so variable-frame-rate video is approximate.
    """

    name = "opencv"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self._cv2 = importlib.import_module("cv2")
        self._cv2.setNumThreads(1)  # DataLoader workers provide the parallelism

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_cv2"]  # modules do not pickle; DataLoader workers re-import
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cv2 = importlib.import_module("cv2")

    def unsupported(self, info: VideoInfo) -> str | None:
        if info.member is not None:
            return "the opencv decoder reads plain files only, not members of tar shards (use pyav or dali)"
        return None

    def decode(self, request: ClipRequest) -> torch.Tensor:
        cv2, info = self._cv2, request.info
        check_clip_args(request.start, request.num_frames, request.fps, request.image_size)
        indices = frame_indices(info, request.start, request.num_frames, request.fps)
        capture = cv2.VideoCapture(info.path, cv2.CAP_FFMPEG)
        try:
            if not capture.isOpened():
                raise VideoDecodeError(f"opencv cannot open {info.path!r}")
            position = indices[0]
            if position > 0:
                capture.set(cv2.CAP_PROP_POS_FRAMES, position)
            frames: list[np.ndarray] = []
            for index in indices:
                if frames and index == position - 1:  # a repeated frame (clip rate above source rate)
                    frames.append(frames[-1])
                    continue
                while position < index:
                    if not capture.grab():
                        break
                    position += 1
                ok, image = capture.read()
                if not ok:
                    raise VideoDecodeError(f"{info.path!r}: opencv could not read frame {index} "
                                           f"(the stream has {info.num_frames})")
                position = index + 1
                rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                frames.append(_resize_crop_cv2(cv2, rgb, request.image_size))
        finally:
            capture.release()
        return torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)))


def _dali_factory(device: str | torch.device, fallback: ClipDecoder | None = None) -> ClipDecoder:
    from lam_fast.data.dali import DaliDecoder

    return DaliDecoder(device, fallback=fallback)


#: Decoder name -> factory ``(device) -> ClipDecoder``; a factory raises ImportError or
#: DecoderUnavailable when its backend cannot run.
DECODERS: dict[str, Callable[[str | torch.device], ClipDecoder]] = {
    "pyav": PyAVDecoder,
    "opencv": OpenCVDecoder,
    "dali": _dali_factory,
}

_CPU_ORDER = ("pyav", "opencv")
_REQUIREMENT = {
    "pyav": ("av", "pip install 'lam_fast[video]'"),
    "opencv": ("cv2", "pip install opencv-python-headless"),
    "dali": ("nvidia.dali", "pip install 'lam_fast[dali]' (nvidia-dali-cuda130)"),
}


def _why_unavailable(name: str, device: torch.device) -> str | None:
    module, hint = _REQUIREMENT[name]
    try:
        importlib.import_module(module)
    except ImportError as error:
        return f"{module} does not import ({error}); {hint}"
    if device.type == "cuda" and name != "dali":
        return None  # CPU decoders still serve a GPU run (clips are copied after decoding)
    if device.type not in ("cpu", "cuda"):
        return f"no {name} decoder for device {device}"
    return None


def decoder_status(device: str | torch.device = "cpu") -> dict[str, str | None]:
    """Each decoder name -> None if it can run for ``device``, else the reason it cannot."""
    device = torch.device(device)
    return {name: _why_unavailable(name, device) for name in DECODERS}


def auto_decoder(device: str | torch.device = "cpu") -> str:
    """The decoder ``auto`` picks for ``device`` (see the module docstring)."""
    device = torch.device(device)
    status = decoder_status(device)
    order = (("dali",) if device.type == "cuda" else ()) + _CPU_ORDER
    for name in order:
        if status[name] is None:
            return name
    raise DecoderUnavailable("no video decoder can run here: " +
                             "; ".join(f"{name}: {reason}" for name, reason in status.items()))


def make_decoder(name: str = "auto", device: str | torch.device = "cpu") -> ClipDecoder:
    """The decoder called ``name`` (or the ``auto`` choice) for clips on ``device``.

    Raises:
        ValueError: unknown name.
        DecoderUnavailable: the named decoder cannot run here (the message says why).
    """
    device = torch.device(device)
    auto = name == "auto"
    if auto:
        name = auto_decoder(device)
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose auto or one of {', '.join(DECODERS)}")
    reason = _why_unavailable(name, device)
    if reason is not None:
        raise DecoderUnavailable(f"decoder {name!r} is unavailable: {reason}")
    if auto and name == "dali" and _why_unavailable("pyav", device) is None:
        # auto trains on the same videos on a GPU as on a CPU: what DALI cannot decode, PyAV does
        return _dali_factory(device, fallback=PyAVDecoder("cpu"))
    return DECODERS[name](device)

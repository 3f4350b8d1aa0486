"""NVIDIA DALI clip decoder: NVDEC on a GPU (resize and crop on the GPU too), or DALI's CPU decoder.

One DALI pipeline run decodes a whole batch of clips::

    encoded bytes ─┐
                   ├─ fn.decoders.video(frames=...) ─ fn.resize(ROI of the crop -> S x S, antialias)
    frame indices ─┘       (cpu, or mixed = NVDEC)       ─ fn.transpose(FHWC -> FCHW), uint8

Frames are addressed by index: :func:`~lam_fast.data.video.frame_indices` applies the
nearest-frame rule of :func:`~lam_fast.data.video.decode_clip` on the stream's nominal frame grid,
so on constant-rate video DALI returns the frames PyAV picks (variable-rate video: approximate;
a target within a millisecond of midway between two frames can also differ, because PyAV
compares with the container's rounded timestamps). The geometry is PyAV's: shorter side resized
to ``S``, the longer one to ``max(S, round(longer * S / shorter))``, linear filter antialiased
when shrinking, centre crop at offsets rounded down. The resize reads only the crop's source
region, so columns or rows the crop drops are never resized. Colour conversion differs from
swscale's by about 2/255 on average.

Codecs: DALI's CPU decoder reads only VP8, VP9 and MJPEG; the mixed (GPU) backend adds H.264,
HEVC, MPEG-4 and AV1 (``fn.decoders.video.__doc__``). :meth:`DaliDecoder.unsupported` says so for
other files, and :class:`~lam_fast.data.dataset.VideoClipDataset` skips them.

Failures: a DALI pipeline that raised is dead ("Current pipeline object is no longer valid"), and
one bad sample fails the whole run. So a failed batch is retried one clip at a time on a fresh
pipeline, and only the clips that fail alone become :class:`~lam_fast.data.video.VideoDecodeError`.
A frame index past the end of what DALI can decode is an error (``pad_mode="none"``), never a
silently padded black frame.

``nvidia.dali`` is imported by :class:`DaliDecoder` itself, never when this module is imported.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lam_fast.data.decoders.base import ClipDecoder, ClipRequest, DecoderUnavailable
from lam_fast.data.video import (
    VideoDecodeError,
    VideoInfo,
    check_clip_args,
    frame_indices,
    read_video_bytes,
    video_name,
)

__all__ = ["CPU_CODECS", "GPU_CODECS", "DaliDecoder"]

#: FFmpeg codec names that DALI's CPU video decoder reads.
CPU_CODECS: frozenset[str] = frozenset({"vp8", "vp9", "mjpeg"})
#: FFmpeg codec names that DALI's mixed (NVDEC) video decoder reads.
GPU_CODECS: frozenset[str] = CPU_CODECS | {"h264", "hevc", "mpeg4", "av1"}

_CODEC_LABELS = {"vp8": "VP8", "vp9": "VP9", "mjpeg": "MJPEG", "h264": "H.264", "hevc": "HEVC",
                 "mpeg4": "MPEG-4", "av1": "AV1"}


class _PipelineError(Exception):
    """A DALI pipeline run failed (the message is DALI's, trimmed); the pipeline is dropped."""


def _dali_message(error: BaseException) -> str:
    """The informative part of a DALI pipeline error (without the pipeline-definition traceback)."""
    text = str(error)
    marker = "encountered:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith("C++ context")
            and line != "Current pipeline object is no longer valid."]
    return " ".join(kept) or str(error).strip() or type(error).__name__


class DaliDecoder(ClipDecoder):
    """Batched clip decoding with NVIDIA DALI (see the module docstring).

    Args:
        device: ``cpu`` for DALI's CPU pipeline (VP8, VP9, MJPEG), or a CUDA device for NVDEC
            decoding with resize and crop on that GPU; clips come out on ``device``.

    Raises:
        ImportError: ``nvidia.dali`` does not import.
        DecoderUnavailable: a CUDA device was asked for and CUDA is not available, or the device
            type is neither ``cpu`` nor ``cuda``.
    """

    name = "dali"
    batched = True

    def __init__(self, device: str | torch.device = "cpu", *, fallback: ClipDecoder | None = None) -> None:
        device = torch.device(device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise DecoderUnavailable(f"DALI on {device} needs CUDA, which is not available here")
            index = device.index if device.index is not None else torch.cuda.current_device()
            device = torch.device("cuda", index)
        elif device.type != "cpu":
            raise DecoderUnavailable(f"DALI decodes on cpu or cuda devices, not {device}")
        super().__init__(device)
        self.fallback = fallback
        self._fell_back: set[str] = set()  # files already reported as decoded by the fallback
        self._import_dali()
        self.num_threads = min(4, os.cpu_count() or 1)
        # (image_size, max_batch_size) -> built pipeline; at most one per size. The frame count
        # is not part of the key: it only comes from the per-clip index lists.
        self._pipelines: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()

    def _import_dali(self) -> None:
        import nvidia.dali.math as dmath
        from nvidia.dali import Pipeline, fn, types

        self._Pipeline, self._fn, self._types, self._dmath = Pipeline, fn, types, dmath

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_Pipeline", "_fn", "_types", "_dmath", "_lock"):
            del state[key]
        state["_pipelines"] = {}  # pipelines do not pickle; rebuilt on demand
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._import_dali()
        self._lock = threading.Lock()

    @property
    def codecs(self) -> frozenset[str]:
        """FFmpeg codec names this decoder reads on its device."""
        return GPU_CODECS if self.device.type == "cuda" else CPU_CODECS

    def unsupported(self, info: VideoInfo) -> str | None:
        if info.codec in self.codecs:
            return None
        if self.fallback is not None:
            return self.fallback.unsupported(info)
        labels = ", ".join(_CODEC_LABELS[c] for c in sorted(self.codecs, key=list(_CODEC_LABELS).index))
        if self.device.type == "cpu":
            return (f"codec {info.codec} is not supported by DALI's CPU decoder ({labels} only); "
                    "use --decoder pyav or a GPU")
        return f"codec {info.codec} is not supported by DALI's GPU decoder ({labels} only); use --decoder pyav"

    # -- pipelines -----------------------------------------------------------------------------

    def _build(self, image_size: int, max_batch_size: int) -> Any:
        fn, types, dmath = self._fn, self._types, self._dmath
        gpu = self.device.type == "cuda"
        size = float(image_size)
        pipe = self._Pipeline(
            batch_size=max_batch_size,
            num_threads=self.num_threads,
            device_id=self.device.index if gpu else None,
            prefetch_queue_depth=1,  # inputs are fed per run; nothing to prefetch
            exec_dynamic=True,  # the resize arguments read the shape of GPU data on the CPU
        )
        with pipe:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
            # pad_mode="none": an index past the decodable end raises rather than padding black.
            video = fn.decoders.video(encoded, frames=frames, pad_mode="none",
                                      device="mixed" if gpu else "cpu")
            # decode_clip's geometry: resize to (new_h, new_w), shorter side S, longer side
            # max(S, round(longer * S / shorter)); crop S x S at offsets floor((new - S) / 2).
            # Done as one resize of that crop's source region (its ROI) to S x S: the same sampling
            # grid and antialiasing filter, without resizing the columns or rows the crop drops.
            shape = video.shape(dtype=types.FLOAT)  # (F, H, W, C), on the CPU
            height, width = shape[1], shape[2]
            shorter = dmath.min(height, width)
            new_h = dmath.max(size, dmath.floor(height * size / shorter + 0.5))
            new_w = dmath.max(size, dmath.floor(width * size / shorter + 0.5))
            top, left = dmath.floor((new_h - size) * 0.5), dmath.floor((new_w - size) * 0.5)
            scale_y, scale_x = height / new_h, width / new_w  # source pixels per resized pixel
            video = fn.resize(video, size=(image_size, image_size), antialias=True,
                              roi_start=fn.stack(top * scale_y, left * scale_x),
                              roi_end=fn.stack((top + size) * scale_y, (left + size) * scale_x))
            video = fn.transpose(video, perm=[0, 3, 1, 2])  # FHWC -> FCHW, uint8
            pipe.set_outputs(video)
        pipe.build()
        return pipe

    def _pipeline(self, image_size: int, batch_size: int) -> tuple[tuple[int, int], Any]:
        """A cached pipeline for output size S that takes ``batch_size`` clips, built if needed."""
        fitting = [key for key in self._pipelines if key[0] == image_size and key[1] >= batch_size]
        if fitting:
            key = min(fitting, key=lambda k: k[1])
            return key, self._pipelines[key]
        for key in [k for k in self._pipelines if k[0] == image_size]:
            self._shutdown(self._pipelines.pop(key))  # superseded by the larger one built now
        key = (image_size, batch_size)
        self._pipelines[key] = pipe = self._build(image_size, batch_size)
        return key, pipe

    @staticmethod
    def _shutdown(pipe: Any) -> None:
        """Stop a pipeline's threads now, in this process (not at some later garbage collection,
        which in a forked DataLoader worker would join threads that do not exist there)."""
        shutdown = getattr(pipe, "_shutdown", None)
        if shutdown is not None:
            shutdown()

    def close(self) -> None:
        """Shut down every cached pipeline (they are rebuilt on the next decode)."""
        with self._lock:
            while self._pipelines:
                self._shutdown(self._pipelines.popitem()[1])

    def _run(self, num_frames: int, image_size: int, encoded: list[np.ndarray],
             frames: list[np.ndarray]) -> list[torch.Tensor]:
        """One pipeline run, copied into a new torch tensor on :attr:`device`.

        Raises:
            _PipelineError: DALI failed; that pipeline is dropped from the cache (DALI cannot run
                it again). Other errors (the torch copy, out of memory) propagate unchanged.
        """
        key, pipe = self._pipeline(image_size, len(encoded))
        try:
            pipe.feed_input("encoded", encoded)
            pipe.feed_input("frames", frames)
            (output,) = pipe.run()  # host-synchronous: the GPU work is finished
            batch = output.as_tensor()  # dense (n, T, 3, S, S)
        except Exception as error:  # DALI raises RuntimeError, occasionally IndexError/ValueError
            dead = self._pipelines.pop(key, None)
            if dead is not None:
                self._shutdown(dead)
            # Not chained: DALI's traceback would keep the dead pipeline (threads, buffers) alive.
            raise _PipelineError(_dali_message(error)) from None
        shape = (len(encoded), num_frames, 3, image_size, image_size)
        if tuple(batch.shape()) != shape:  # cannot happen with the ops above; guard the copy
            raise RuntimeError(f"DALI produced a batch of shape {tuple(batch.shape())}, expected {shape}")
        from nvidia.dali.plugin.pytorch import feed_ndarray

        clips = torch.empty(shape, dtype=torch.uint8, device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        feed_ndarray(batch, clips, cuda_stream=stream)
        return list(clips.unbind(0))

    # -- decoding ------------------------------------------------------------------------------

    def decode(self, request: ClipRequest) -> torch.Tensor:
        result = self.decode_batch([request])[0]
        if isinstance(result, VideoDecodeError):
            try:
                raise result
            finally:
                del result  # no frame <-> exception cycle keeping this decoder's pipelines alive
        return result

    def decode_batch(self, requests: Sequence[ClipRequest]) -> list[torch.Tensor | VideoDecodeError]:
        """Decode a batch of clips in one pipeline run (see the module docstring for failures).

        Returns:
            For each request, uint8 ``(T, 3, S, S)`` on :attr:`device`, or the
            :class:`~lam_fast.data.video.VideoDecodeError` saying why that clip failed.

        Raises:
            ValueError: the requests differ in ``num_frames`` or ``image_size``, or one has an
                invalid start, frame count, rate or size.
        """
        if not requests:
            return []
        num_frames, image_size = requests[0].num_frames, requests[0].image_size
        for request in requests:
            if (request.num_frames, request.image_size) != (num_frames, image_size):
                raise ValueError(
                    "DaliDecoder.decode_batch needs one num_frames and image_size per batch, got "
                    f"{(num_frames, image_size)} and {(request.num_frames, request.image_size)}")
            check_clip_args(request.start, request.num_frames, request.fps, request.image_size)

        results: list[torch.Tensor | VideoDecodeError | None] = [None] * len(requests)
        pending = self._read_inputs(requests, results)
        with self._lock:
            if pending:
                self._decode_pending(requests, pending, results)
        if self.fallback is not None:
            self._fall_back(requests, results)
        return results  # type: ignore[return-value]  # every slot is filled

    def _read_inputs(self, requests: Sequence[ClipRequest], results: list) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(position, encoded bytes, frame indices)`` of each request DALI can try; the others'
        slots of ``results`` get their :class:`~lam_fast.data.video.VideoDecodeError`."""
        pending: list[tuple[int, np.ndarray, np.ndarray]] = []
        for position, request in enumerate(requests):
            info, name = request.info, video_name(request.info.ref)
            reason = self.unsupported(info)
            if reason is not None:
                results[position] = VideoDecodeError(f"{name!r}: {reason}")
                continue
            try:
                data = read_video_bytes(info.ref)
            except VideoDecodeError as error:
                results[position] = error
                continue
            if not data:
                results[position] = VideoDecodeError(f"{name!r} is empty (0 bytes)")
                continue
            indices = frame_indices(info, request.start, request.num_frames, request.fps)
            pending.append((position, np.frombuffer(data, dtype=np.uint8), np.asarray(indices, dtype=np.int32)))
        return pending

    def _decode_pending(self, requests: Sequence[ClipRequest], pending: list[tuple[int, np.ndarray, np.ndarray]],
                        results: list) -> None:
        """One pipeline run for all of ``pending``; after a failure, each clip alone on a fresh
        pipeline, so only the clips that fail alone get an error."""
        num_frames, image_size = requests[0].num_frames, requests[0].image_size
        try:
            clips = self._run(num_frames, image_size, [p[1] for p in pending], [p[2] for p in pending])
        except _PipelineError as error:
            if len(pending) == 1:
                results[pending[0][0]] = self._error(requests[pending[0][0]], pending[0][2], error)
                return
            for position, encoded, indices in pending:
                try:
                    (results[position],) = self._run(num_frames, image_size, [encoded], [indices])
                except _PipelineError as single_error:
                    results[position] = self._error(requests[position], indices, single_error)
        else:
            for (position, _, _), clip in zip(pending, clips, strict=True):
                results[position] = clip

    def _fall_back(self, requests: Sequence[ClipRequest], results: list) -> None:
        """Decode what DALI could not with :attr:`fallback`: codecs or profiles DALI cannot decode
        (MPEG-2, 10-bit H.264 on NVDEC...) go to the CPU decoder; its clips are copied to
        :attr:`device`. Warns once per file which decoder ran."""
        for position, result in enumerate(results):
            if isinstance(result, VideoDecodeError):
                name = video_name(requests[position].info.ref)
                if name not in self._fell_back:
                    self._fell_back.add(name)
                    warnings.warn(f"DALI cannot decode {name!r}; decoding it with {self.fallback.name} "
                                  f"instead ({result})", stacklevel=3)
                try:
                    results[position] = self.fallback.decode(requests[position]).to(self.device)
                except VideoDecodeError as error:
                    results[position] = VideoDecodeError(f"{result}; {self.fallback.name} also failed: {error}")

    @staticmethod
    def _error(request: ClipRequest, indices: np.ndarray, error: _PipelineError) -> VideoDecodeError:
        name = video_name(request.info.ref)
        wanted = f"frames {int(indices[0])}..{int(indices[-1])}" if len(indices) > 1 else f"frame {int(indices[0])}"
        return VideoDecodeError(f"{name!r}: DALI could not decode {wanted} (of {request.info.num_frames}): {error}")

    def __repr__(self) -> str:
        fallback = f", fallback={self.fallback!r}" if self.fallback is not None else ""
        return f"DaliDecoder(device={str(self.device)!r}{fallback})"

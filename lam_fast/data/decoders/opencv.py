"""The ``opencv`` backend: OpenCV's FFmpeg backend on the CPU, frames addressed by index.

Frame numbers come from :func:`~lam_fast.data.video.frame_indices` (the nearest-frame rule on the
stream's nominal frame grid); plain files only.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from lam_fast.data.decoders.base import ClipDecoder, ClipRequest
from lam_fast.data.video import VideoDecodeError, VideoInfo, check_clip_args, frame_indices, resized_size

__all__ = ["OpenCVDecoder"]


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

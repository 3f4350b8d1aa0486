"""The ``pyav`` backend: PyAV (FFmpeg) on the CPU, timestamp-exact, any codec FFmpeg decodes.

Plain files and tar members. One seek per clip; only the chosen frames are converted (swscale does
YUV->RGB and the resize in one pass). The fastest CPU decoder measured here (perf/bench_decode.py).
"""

from __future__ import annotations

import torch

from lam_fast.data.decoders.base import ClipDecoder, ClipRequest
from lam_fast.data.video import decode_clip

__all__ = ["PyAVDecoder"]


class PyAVDecoder(ClipDecoder):
    """PyAV (FFmpeg) CPU decoding through :func:`~lam_fast.data.video.decode_clip`."""

    name = "pyav"

    def decode(self, request: ClipRequest) -> torch.Tensor:
        return decode_clip(request.info.ref, request.start, request.num_frames, request.fps,
                           request.image_size)

"""Synthetic test videos whose frames say which frame they are.

Frame ``k`` of every video made here is grey with 8 horizontal bands; band ``b`` (top to bottom)
is bright when bit ``b`` of ``k`` is set and dark otherwise, plus a small horizontal gradient that
moves with ``k`` (so consecutive frames differ everywhere, as in real video). Bands span the full
width, so they survive any centre crop of a landscape frame, and :func:`frame_ids` reads ``k``
back from a decoded clip. Test modules get :func:`frame_ids` through the ``read_frame_ids`` fixture
rather than ``import conftest``, which is ambiguous when several test folders
have a conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

NUM_BANDS = 8
DARK, BRIGHT, GRADIENT = 40, 215, 24


def frame_image(k: int, width: int, height: int) -> np.ndarray:
    """Frame ``k`` as uint8 (height, width, 3) RGB."""
    rows = np.arange(height) * NUM_BANDS // height
    bits = (k >> rows) & 1
    base = np.where(bits == 1, BRIGHT, DARK)[:, None]
    ramp = ((np.arange(width)[None, :] + 3 * k) % width) * GRADIENT // width - GRADIENT // 2
    grey = np.clip(base + ramp, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def frame_ids(clip: torch.Tensor) -> list[int]:
    """Read the frame number back from each frame of a uint8 (T, 3, S, S) clip."""
    size = clip.shape[-1]
    centre_rows = [int((b + 0.5) * size / NUM_BANDS) for b in range(NUM_BANDS)]
    band_means = clip[:, 0, centre_rows, :].float().mean(dim=-1)  # (T, bands)
    bits = (band_means > (DARK + BRIGHT) / 2).long()
    return (bits * (2 ** torch.arange(NUM_BANDS))).sum(dim=1).tolist()


def encode_video(
    path: Path,
    *,
    fps: Fraction | int,
    num_frames: int,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    gop: int = 12,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode ``num_frames`` frames of :func:`frame_image` at ``fps`` into ``path``."""
    av = pytest.importorskip("av")
    rate = Fraction(fps)
    options = {
        "libx264": {"crf": "8", "bf": "2", "x264-params": "scenecut=0"},  # B-frames, fixed GOP
        "mpeg4": {"qscale": "2"},
        "libvpx-vp9": {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    }[codec] | {"g": str(gop)}
    with av.open(os.fspath(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for k in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(k, width, height), format="rgb24")
            frame.pts = k
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="session")
def read_frame_ids() -> Callable[[torch.Tensor], list[int]]:
    """:func:`frame_ids`: the frame numbers shown in a decoded clip."""
    return frame_ids


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad test videos, made once per session (about a second to encode).

    Keys: ``h264_24`` (64x48, 24 fps, 3 s, B-frames, GOP 12), ``h264_30`` (30 fps, 3 s),
    ``ntsc`` (30000/1001 fps, 2 s), ``vp9_24.webm`` (millisecond timestamps, no stream duration),
    ``mpeg4_25.avi``, ``portrait`` (48x64, 24 fps, 2 s), ``short`` (24 fps, 1 s), ``faststart``
    (24 fps, 3 s, index first), and the broken ``random`` (random bytes), ``empty`` (0 bytes),
    ``truncated`` (first half of ``h264_24``: index at the end, so it is lost),
    ``truncated_faststart`` (first half of ``faststart``: index intact, data missing),
    ``truncated_one_gop`` (first 60% of a 3 s faststart video that is a single GOP: the tail
    check decodes from frame 0 and runs into the cut).
    """
    pytest.importorskip("av")
    root = tmp_path_factory.mktemp("videos")
    made = {
        "h264_24": encode_video(root / "h264_24.mp4", fps=24, num_frames=72),
        "h264_30": encode_video(root / "h264_30.mp4", fps=30, num_frames=90),
        "ntsc": encode_video(root / "ntsc.mp4", fps=Fraction(30000, 1001), num_frames=60),
        "vp9_24": encode_video(root / "vp9_24.webm", fps=24, num_frames=72, codec="libvpx-vp9"),
        "mpeg4_25": encode_video(root / "mpeg4_25.avi", fps=25, num_frames=75, codec="mpeg4"),
        "portrait": encode_video(root / "portrait.mp4", fps=24, num_frames=48, width=48,
                                 height=64),
        "short": encode_video(root / "short.mp4", fps=24, num_frames=24),
        "faststart": encode_video(root / "faststart.mp4", fps=24, num_frames=72,
                                  container_options={"movflags": "faststart"}),
        "one_gop": encode_video(root / "one_gop.mp4", fps=24, num_frames=72, gop=1000,
                                container_options={"movflags": "faststart"}),
    }
    rng = np.random.default_rng(0)
    made["random"] = root / "random.mp4"
    made["random"].write_bytes(rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    made["empty"] = root / "empty.mp4"
    made["empty"].write_bytes(b"")
    for name, whole, kept in (("truncated", "h264_24", 0.5),
                              ("truncated_faststart", "faststart", 0.5),
                              ("truncated_one_gop", "one_gop", 0.6)):
        data = made[whole].read_bytes()
        made[name] = root / f"{name}.mp4"
        made[name].write_bytes(data[: int(len(data) * kept)])
    return made

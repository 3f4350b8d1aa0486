"""Small synthetic video folders for training tests: a bright square moving with a per-video
velocity over a textured background, so the next frame depends on an unobserved 'action'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_moving_square(path: Path, *, velocity: tuple[int, int], seconds: float = 3.0, fps: int = 8, size: int = 48):
    av = pytest.importorskip("av")
    rng = np.random.default_rng(abs(hash(velocity)) % 2**32)
    background = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(int(seconds * fps)):
            frame = background.copy()
            y = (8 + velocity[0] * k) % (size - 12)
            x = (8 + velocity[1] * k) % (size - 12)
            frame[y : y + 12, x : x + 12] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for i, v in enumerate([(1, 0), (0, 2), (-2, 1), (1, -1)]):
        write_moving_square(folder / f"clip{i}.mp4", velocity=v)
    return folder


@pytest.fixture(scope="session")
def folder_with_corrupt(tmp_path_factory, video_folder) -> Path:
    folder = tmp_path_factory.mktemp("videos_corrupt")
    for p in video_folder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 100)
    (folder / "empty.mp4").write_bytes(b"")
    return folder

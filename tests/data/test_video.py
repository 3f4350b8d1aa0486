"""probe_video and decode_clip on synthetic videos whose frames carry their own frame number."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lam_fast.data.video as video_module
from lam_fast.data import VideoDecodeError, VideoInfo, decode_clip, probe_video

av = pytest.importorskip("av")


def presentation_times(path: Path) -> list[Fraction]:
    """Every frame's timestamp (seconds from the stream start), by decoding the whole file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        return [(frame.pts - start) * Fraction(stream.time_base) for frame in container.decode(stream)]


def nearest_frames(times: list[Fraction], start: float, num_frames: int, fps: float) -> list[int]:
    """Brute-force oracle: index of the frame nearest each target time, ties to the earlier."""
    targets = [Fraction(start) + Fraction(k) / Fraction(fps) for k in range(num_frames)]
    return [min(range(len(times)), key=lambda i: (abs(times[i] - t), times[i])) for t in targets]


@pytest.mark.parametrize(
    ("name", "fps_stated", "num_frames", "duration"),
    [
        ("h264_24", 24, 72, 3.0),
        ("h264_30", 30, 90, 3.0),
        ("ntsc", 30000 / 1001, 60, 2.002),
        ("vp9_24", 24, 72, 2.999),  # WebM: millisecond timestamps, container duration only
        ("mpeg4_25", 25, 75, 3.0),
    ],
)
def test_probe_reads_metadata(videos, name, fps_stated, num_frames, duration):
    info = probe_video(videos[name])
    assert info == VideoInfo(path=str(videos[name]), duration=info.duration, fps=info.fps,
                             num_frames=num_frames, width=64, height=48, codec=name.split("_")[0]
                             .replace("ntsc", "h264"))
    assert info.fps == pytest.approx(fps_stated)
    assert info.duration == pytest.approx(duration, abs=1e-3)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("random", "cannot open"),
        ("empty", "cannot open"),
        ("truncated", "cannot open"),  # index at the end of the file: cut off
        ("truncated_faststart", "no decodable video frame in its last second"),
        ("truncated_one_gop", "decoding failed"),  # tail check decodes from frame 0 into the cut
    ],
)
def test_probe_rejects_broken_files(videos, name, reason):
    with pytest.raises(VideoDecodeError, match=reason):
        probe_video(videos[name])


def test_probe_rejects_missing_and_audio_only_files(tmp_path):
    with pytest.raises(VideoDecodeError, match="cannot open"):
        probe_video(tmp_path / "missing.mp4")
    audio_only = tmp_path / "audio.wav"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoDecodeError, match="no video stream"):
        probe_video(audio_only)


def test_probe_and_decode_detect_a_clean_cut_at_a_packet_boundary(videos, read_frame_ids, tmp_path):
    # One GOP, index first, file cut exactly between two packets: the demuxer ends without an
    # error, so only the comparison with the stated duration reveals the truncation.
    with av.open(str(videos["one_gop"])) as container:
        cut = [packet.pos for packet in container.demux(container.streams.video[0])][40]
    path = tmp_path / "cut.mp4"
    path.write_bytes(videos["one_gop"].read_bytes()[:cut])
    with pytest.raises(VideoDecodeError, match=r"truncated: frames stop at 1\.\d+ s of a stated 3"):
        probe_video(path)
    with pytest.raises(VideoDecodeError, match="produced 5 of 8 frames: the decodable stream ends"):
        decode_clip(path, 0.5, 8, 4.0, 16)


@pytest.mark.parametrize("name", ["h264_24", "h264_30", "ntsc", "vp9_24", "mpeg4_25", "faststart"])
@pytest.mark.parametrize(
    ("start", "num_frames", "fps"),
    [(0.0, 8, 4.0), (0.0, 24, 24.0), (0.6, 8, 7.0), (0.93, 20, 60.0), (0.1, 3, 1.5), (1.01, 4, 30.0)],
)
def test_decode_picks_the_nearest_frame(videos, read_frame_ids, name, start, num_frames, fps):
    expected = nearest_frames(presentation_times(videos[name]), start, num_frames, fps)
    clip = decode_clip(videos[name], start, num_frames, fps, 32)
    assert read_frame_ids(clip) == expected


@given(
    name=st.sampled_from(["h264_24", "h264_30", "ntsc", "vp9_24", "mpeg4_25"]),
    fps=st.floats(0.5, 90.0),
    num_frames=st.integers(1, 12),
    start_fraction=st.floats(0.0, 1.0),
)
def test_decode_matches_the_brute_force_oracle(videos, read_frame_ids, name, fps, num_frames,
                                               start_fraction):
    times = presentation_times(videos[name])
    extent = (num_frames - 1) / fps
    duration = probe_video(videos[name]).duration
    if extent > duration:
        num_frames = 1 + int(duration * fps)
        extent = (num_frames - 1) / fps
    start = start_fraction * (duration - extent)
    expected = nearest_frames(times, start, num_frames, fps)
    assert read_frame_ids(decode_clip(videos[name], start, num_frames, fps, 24)) == expected


def test_decode_ties_go_to_the_earlier_frame(videos, read_frame_ids):
    # 30 fps source, 4 fps clip: t = 0.25 s falls midway between frames 7 and 8.
    assert read_frame_ids(decode_clip(videos["h264_30"], 0.0, 4, 4.0, 48)) == [0, 7, 15, 22]


def test_decode_on_frame_timestamps_is_exact(videos, read_frame_ids):
    # 24 fps to 4 fps: every target is a frame timestamp (0.25 s = frame 6), in any container.
    for name in ("h264_24", "vp9_24"):
        assert read_frame_ids(decode_clip(videos[name], 0.0, 12, 4.0, 48)) == list(range(0, 72, 6))


@pytest.mark.parametrize(
    ("name", "size", "resized"),
    [("h264_24", 48, (48, 64)), ("h264_24", 32, (32, 43)), ("h264_24", 80, (80, 107)),
     ("portrait", 40, (53, 40))],
)
def test_decode_resizes_shorter_side_and_centre_crops(videos, name, size, resized):
    clip = decode_clip(videos[name], 0.5, 3, 4.0, size)
    assert clip.shape == (3, 3, size, size)
    assert clip.dtype == torch.uint8
    # The first frame (t = 0.5 s: frame 12) equals swscale's resize of that frame, cropped.
    height, width = resized
    with av.open(str(videos[name])) as container:
        frames = list(container.decode(video=0))
    full = frames[12].reformat(width=width, height=height, format="rgb24",
                               interpolation="BILINEAR").to_ndarray()
    top, left = (height - size) // 2, (width - size) // 2
    np.testing.assert_array_equal(clip[0].permute(1, 2, 0).numpy(),
                                  full[top : top + size, left : left + size])


def test_resize_is_antialiased():
    # 1-pixel checkerboard shrunk 4.25x: an antialiased filter gives flat grey, a point sampler
    # keeps (aliased) black and white pixels.
    yy, xx = np.mgrid[0:272, 0:640]
    board = np.repeat((((xx + yy) % 2) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    frame = av.VideoFrame.from_ndarray(board, format="rgb24").reformat(format="yuv420p")
    image = video_module._to_rgb_crop(frame, 64).astype(float)
    assert image.shape == (64, 64, 3)
    assert abs(image.mean() - 127.5) < 2 and image.std() < 4


def test_decode_of_truncated_data_raises(videos):
    with pytest.raises(VideoDecodeError, match="produced 0 of 4 frames: no frame decodes"):
        decode_clip(videos["truncated_faststart"], 2.0, 4, 4.0, 16)
    with pytest.raises(VideoDecodeError, match="decoding failed"):
        decode_clip(videos["truncated_one_gop"], 0.5, 8, 4.0, 16)


def test_decode_past_the_end_raises_and_the_last_frame_is_reachable(videos, read_frame_ids):
    info = probe_video(videos["h264_24"])
    extent = 7 / 4.0
    clip = decode_clip(videos["h264_24"], info.duration - extent, 8, 4.0, 16)
    assert read_frame_ids(clip)[-1] == 71
    with pytest.raises(VideoDecodeError, match="produced 7 of 8 frames"):
        decode_clip(videos["h264_24"], info.duration - extent + 0.05, 8, 4.0, 16)


def test_late_start_seeks_instead_of_decoding_from_the_start(videos, read_frame_ids, monkeypatch):
    first_times = []
    original = video_module._iter_frames

    def recording(container, stream, seek_time, name, targets=None):
        frames = original(container, stream, seek_time, name, targets)
        first = next(frames)
        first_times.append(first[0])
        yield first
        yield from frames

    monkeypatch.setattr(video_module, "_iter_frames", recording)
    clip = decode_clip(videos["h264_24"], 2.1, 4, 8.0, 16)
    assert read_frame_ids(clip) == [50, 53, 56, 59]
    # GOPs are 12 frames (0.5 s): decoding starts at the keyframe at 2.0 s.
    assert first_times == [Fraction(2)]


def test_seek_that_lands_late_backs_off(videos, read_frame_ids, monkeypatch):
    # Simulate a demuxer whose seek lands after the target: the first attempt drops every frame
    # up to the target; decode_clip must seek earlier and still pick the right frames.
    original = video_module._iter_frames
    seeks = []

    def late_landing(container, stream, seek_time, name, targets=None):
        seeks.append(seek_time)
        frames = original(container, stream, seek_time, name, targets)
        if len(seeks) == 1:
            frames = (item for item in frames if item[0] > seek_time)
        yield from frames

    monkeypatch.setattr(video_module, "_iter_frames", late_landing)
    clip = decode_clip(videos["h264_24"], 1.5, 4, 4.0, 16)
    assert read_frame_ids(clip) == [36, 42, 48, 54]
    assert seeks == [Fraction(3, 2), Fraction(1, 2)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": -0.1}, "start"),
        ({"start": math.inf}, "start"),
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 2.0}, "num_frames"),
        ({"fps": 0.0}, "fps"),
        ({"fps": math.nan}, "fps"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_decode_validates_arguments(videos, kwargs, message):
    arguments = {"start": 0.0, "num_frames": 4, "fps": 4.0, "image_size": 16} | kwargs
    with pytest.raises(ValueError, match=message):
        decode_clip(videos["h264_24"], **arguments)


# Skipping non-reference frames that cannot be chosen ------------------------------------------


def _decode_counting(monkeypatch, *args, skip: bool):
    """decode_clip(*args) with frame skipping on or off; also return how many frames it decoded."""
    decoded = []
    original = video_module._iter_frames

    def counting(*inner):
        for item in original(*inner):
            decoded.append(item[0])
            yield item

    with monkeypatch.context() as patch:
        patch.setattr(video_module, "_iter_frames", counting)
        if not skip:
            patch.setattr(video_module, "_needed_pts", lambda *a: None)
        clip = decode_clip(*args)
    return clip, len(decoded)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # monkeypatch.context per example
@given(name=st.sampled_from(["h264_24", "h264_30", "ntsc", "vp9_24", "mpeg4_25", "faststart"]),
       start=st.floats(0.0, 1.2), num_frames=st.integers(1, 6), fps=st.sampled_from([1.0, 3.0, 4.0, 7.5, 24.0, 50.0]))
def test_skipping_unneeded_frames_changes_no_pixel(videos, monkeypatch, name, start, num_frames, fps):
    num_frames = min(num_frames, 1 + math.floor((1.9 - start) * fps))  # stay inside the 2 s videos
    args = (videos[name], start, num_frames, fps, 16)
    fast, fast_count = _decode_counting(monkeypatch, *args, skip=True)
    full, full_count = _decode_counting(monkeypatch, *args, skip=False)
    assert torch.equal(fast, full)
    assert fast_count <= full_count


def test_skipping_drops_b_frames_between_sparse_targets(videos, monkeypatch):
    # 24 fps H.264 with B-frames, clip at 3 fps: most frames between targets are droppable.
    args = (videos["h264_24"], 0.2, 6, 3.0, 16)
    fast, fast_count = _decode_counting(monkeypatch, *args, skip=True)
    full, full_count = _decode_counting(monkeypatch, *args, skip=False)
    assert torch.equal(fast, full)
    assert fast_count < 0.8 * full_count

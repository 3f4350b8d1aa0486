"""make-shards probes what it packs (as training probes it), y4m files, and the command's user errors.

write_shards / ``lam-fast make-shards`` skip and count every file training would skip as unreadable
(random bytes, empty, truncated), so a shard never holds one; y4m (raw YUV4MPEG2) files are videos
that decode, and a broken one is skipped with a reason about its layout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lam_fast.cli.data import make_shards_main
from lam_fast.cli.main import main as lam_fast_main
from lam_fast.data import VideoClipDataset, VideoDecodeError, decode_clip, probe_video, resolve_sources
from lam_fast.data.shard_writer import write_shards
from lam_fast.data.shards import shard_members

pytest.importorskip("webdataset")

BROKEN = ("random", "empty", "truncated", "truncated_faststart", "truncated_one_gop")
Y4M_HEADER = b"YUV4MPEG2 W32 H32 F4:1 Ip A1:1 C420jpeg\n"
Y4M_FRAME_BYTES = 32 * 32 * 3 // 2  # 4:2:0


def write_y4m(path: Path, num_frames: int = 8, frame_bytes: int = Y4M_FRAME_BYTES) -> Path:
    """A raw YUV4MPEG2 file: the header line, then ``FRAME`` + the samples of each frame."""
    frames = (b"FRAME\n" + bytes((7 * k + i) % 256 for i in range(frame_bytes)) for k in range(num_frames))
    path.write_bytes(Y4M_HEADER + b"".join(frames))
    return path


def members(shards: list[str]) -> list:
    return [member for shard in shards for member in shard_members(shard)]


def packed_names(shards: list[str]) -> list[str]:
    return [Path(member.name).name for member in members(shards)]


def test_write_shards_skips_what_training_skips_and_packs_only_probed_videos(videos, tmp_path):
    inputs = [videos["h264_24"], *(videos[name] for name in BROKEN), videos["vp9_24"]]
    with pytest.warns(UserWarning, match="write_shards skips"):
        written = write_shards(inputs, os.fspath(tmp_path / "s-%06d.tar"))
    assert packed_names(written) == ["000000_h264_24.mp4", "000006_vp9_24.webm"]
    assert written.num_videos == 2
    assert [name for name, _ in written.skipped] == [os.fspath(videos[name]) for name in BROKEN]
    # the same rule as the dataset: the same files, for the same reasons
    with pytest.warns(UserWarning, match="VideoClipDataset skips"):
        dataset = VideoClipDataset([os.fspath(p) for p in inputs], num_frames=1, fps=4.0, image_size=16)
    assert written.skipped == dataset.skipped
    for member in members(written):  # everything packed probes and decodes
        assert decode_clip(member, 0.0, 2, 4.0, 16).shape == (2, 3, 16, 16)


def test_make_shards_cli_prints_each_skipped_file_and_the_count(videos, tmp_path, capsys):
    source = tmp_path / "clips"
    source.mkdir()
    for name in ("h264_24", "random", "empty", "truncated"):
        shutil.copy(videos[name], source / videos[name].name)
    out = tmp_path / "out" / "part-%03d.tar"
    assert make_shards_main(["--data", os.fspath(source), "--out", os.fspath(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == [os.fspath(tmp_path / "out" / "part-000.tar")]
    err = printed.err.splitlines()
    assert err[-1] == "1 videos in 1 shards, 3 skipped"
    for name in ("empty", "random", "truncated"):
        assert any(line.startswith(f"skipped {source / (name + '.mp4')}: ") for line in err), (name, err)
    assert packed_names([os.fspath(tmp_path / "out" / "part-000.tar")]) == ["000001_h264_24.mp4"]


def test_make_shards_cli_of_only_unreadable_videos_is_one_error_line(videos, tmp_path, capsys):
    source = tmp_path / "clips"
    source.mkdir()
    for name in ("random", "empty"):
        shutil.copy(videos[name], source / videos[name].name)
    assert lam_fast_main(["make-shards", "--data", os.fspath(source), "--out", os.fspath(tmp_path / "o-%03d.tar")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lam-fast make-shards: error: no video to write: all 2 inputs skipped")
    assert not list(tmp_path.glob("o-*.tar"))


def test_y4m_is_a_video_that_probes_decodes_and_packs(tmp_path, read_frame_ids):
    (tmp_path / "clips").mkdir()
    clip = write_y4m(tmp_path / "clips" / "raw.y4m")
    info = probe_video(clip)
    assert (info.width, info.height, info.num_frames, info.duration, info.fps) == (32, 32, 8, 2.0, 4.0)
    assert decode_clip(clip, 1.0, 4, 4.0, 16).shape == (4, 3, 16, 16)
    assert resolve_sources(tmp_path / "clips") == [os.fspath(clip)]  # a folder source finds it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = write_shards(resolve_sources(tmp_path / "clips"), os.fspath(tmp_path / "y-%03d.tar"))
    (member,) = members(written)
    assert member.name == "000000_raw.y4m"
    assert probe_video(member).num_frames == 8
    assert decode_clip(member, 0.5, 2, 4.0, 16).equal(decode_clip(clip, 0.5, 2, 4.0, 16))


@pytest.mark.parametrize("frame_bytes, num_frames, reason", [
    (Y4M_FRAME_BYTES * 2, 8, "frame 1 at byte 1582 does not start with a FRAME line (each frame is a FRAME "
                             "line + 1536 bytes for W32 H32 C420jpeg)"),
    (Y4M_FRAME_BYTES, 0, "it holds no frame"),
])
def test_a_y4m_ffmpeg_cannot_read_is_skipped_with_what_is_wrong(tmp_path, frame_bytes, num_frames, reason):
    bad = write_y4m(tmp_path / "bad.y4m", num_frames, frame_bytes)
    message = f"{os.fspath(bad)!r} is a y4m (raw YUV4MPEG2) file FFmpeg cannot read: {reason} (FFmpeg: "
    with pytest.raises(VideoDecodeError, match="y4m") as raised:
        probe_video(bad)
    assert str(raised.value).startswith(message)
    with pytest.warns(UserWarning, match="write_shards skips"), pytest.raises(ValueError, match="no video to write"):
        write_shards([bad], os.fspath(tmp_path / "b-%03d.tar"))


def test_a_y4m_header_without_a_size_is_named(tmp_path):
    bad = tmp_path / "nosize.y4m"
    bad.write_bytes(b"YUV4MPEG2 W32 F4:1\n" + b"FRAME\n" + bytes(Y4M_FRAME_BYTES))
    with pytest.raises(VideoDecodeError, match=r"the header b'YUV4MPEG2 W32 F4:1' lacks a valid W \(width\), H"):
        probe_video(bad)


@pytest.mark.parametrize("data", ["/nonexistent/videos", "EMPTY"])
def test_make_shards_of_a_missing_or_videoless_source_is_one_line_and_exit_2(tmp_path, data):
    if data == "EMPTY":
        data = os.fspath(tmp_path / "empty")
        os.mkdir(data)
        (tmp_path / "empty" / "notes.txt").write_text("no video here")
    command = "import sys; from lam_fast.cli.main import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", command, "make-shards", "--data", data,
                             "--out", os.fspath(tmp_path / "s-%03d.tar")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lam-fast make-shards: error: video ") and repr(data) in line

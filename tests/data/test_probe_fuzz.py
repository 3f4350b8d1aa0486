"""A derandomised fuzz of the video probe: damaged files end in a counted skip, never an exception.

Random bytes, random-length truncations of real clips, random bytes written over, inserted into or
appended to them, as plain files and as members of a tar shard: the probe either rejects the file
with a :class:`VideoDecodeError` (the dataset and make-shards skip and count it) or accepts it, and
then a clip of it decodes or fails into the dataset's read-failure count. No other exception, no
hang (a watchdog ends the process with every thread's stack). Also the two damaged headers this
fuzz found, as fixed examples.
"""

from __future__ import annotations

import faulthandler
import os
import tarfile
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from lam_fast.data import VideoClipDataset, VideoDecodeError, VideoInfo, probe_video
from lam_fast.data.shard_writer import write_shards
from lam_fast.data.video import TarMember, probe_videos

pytest.importorskip("av")

SOURCES = ("h264_24", "faststart", "vp9_24", "mpeg4_25")
# Far beyond what one example takes (well under a second): only a hang reaches it.
WATCHDOG_S = 300

# (kind, where in the file as a fraction, bytes): what to do to the source clip
MUTATIONS = st.one_of(
    st.tuples(st.just("random"), st.just(0.0), st.binary(max_size=3000)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.sampled_from(["overwrite", "insert"]), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("append"), st.just(1.0), st.binary(min_size=1, max_size=500)),
)


@pytest.fixture(autouse=True)
def watchdog():
    """A hang becomes a failure: after WATCHDOG_S the process prints every stack and exits."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def mutate(data: bytes, kind: str, where: float, noise: bytes) -> bytes:
    at = min(int(where * len(data)), len(data))
    if kind == "random":
        return noise
    if kind == "truncate":
        return data[:at]
    if kind == "overwrite":
        return data[:at] + noise + data[at + len(noise):]
    return data[:at] + noise + data[at:]  # insert, append


def store(root: Path, data: bytes, suffix: str, in_tar: bool) -> tuple[str, str | TarMember]:
    """``data`` as a file, or as the one member of an uncompressed tar, in a new folder below
    ``root``: ``(the source to give a dataset, the video)``."""
    folder = Path(tempfile.mkdtemp(dir=root))
    path = folder / f"clip{suffix}"
    path.write_bytes(data)
    if not in_tar:
        return os.fspath(path), os.fspath(path)
    shard = os.fspath(folder / "shard.tar")
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(path, arcname=f"000000_clip{suffix}")
    with tarfile.open(shard) as tar:
        (member,) = tar.getmembers()
    return shard, TarMember(shard, member.name, member.offset_data, member.size)


@settings(max_examples=60)
@given(source=st.sampled_from(SOURCES), mutation=MUTATIONS, in_tar=st.booleans())
@example(source="h264_24", mutation=("random", 0.0, b"\x00" * 64), in_tar=False)
@example(source="h264_24", mutation=("truncate", 0.0, b""), in_tar=True)  # empty
@example(source="faststart", mutation=("truncate", 0.5, b""), in_tar=False)
@example(source="vp9_24", mutation=("append", 1.0, b"\xff" * 100), in_tar=True)
def test_the_probe_accepts_or_counts_a_skip_and_decoding_never_raises_otherwise(
        videos, fuzz_dir, source, mutation, in_tar):
    clip = videos[source]
    source, ref = store(fuzz_dir, mutate(clip.read_bytes(), *mutation), clip.suffix, in_tar)
    (probed,) = probe_videos([ref])  # returns the error instead of raising it
    assert isinstance(probed, (VideoInfo, VideoDecodeError))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(probed, VideoDecodeError):
            event("rejected by the probe")
            with pytest.raises(ValueError, match=r"all 1 skipped"):  # the dataset counts the skip
                VideoClipDataset(source, num_frames=2, fps=4.0, image_size=16)
            return
        assert probed.duration > 0 and probed.num_frames >= 1
        dataset = VideoClipDataset(source, num_frames=1, fps=4.0, image_size=16)
        assert dataset.videos == [probed]
        items = [dataset[index] for index in range(3)]
    failed = sum(item is None for item in items)
    event(f"accepted, {failed} of 3 clips failed")
    assert dataset.read_failures == failed  # each clip that cannot be decoded is counted
    assert all(item["video"].shape == (1, 3, 16, 16) for item in items if item is not None)


@settings(max_examples=15)
@given(mutation=MUTATIONS)
def test_make_shards_packs_exactly_what_the_probe_accepts(videos, fuzz_dir, mutation):
    clip = videos["h264_24"]
    _, path = store(fuzz_dir, mutate(clip.read_bytes(), *mutation), clip.suffix, in_tar=False)
    (probed,) = probe_videos([path])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(probed, VideoDecodeError):
            with pytest.raises(ValueError, match="no video to write: all 1 inputs skipped"):
                write_shards([path], os.path.join(os.path.dirname(path), "s-%03d.tar"))
        else:
            assert write_shards([path], os.path.join(os.path.dirname(path), "s-%03d.tar")).num_videos == 1


@pytest.mark.parametrize("old, new, reason", [
    # the sample description's codec tag unknown: the stream has no codec context
    (b"avc1", b"zzzz", "the video stream names no codec FFmpeg knows"),
    # a stream tag that is not UTF-8: PyAV raised UnicodeDecodeError reading the metadata
    (b"VideoHandler", b"Vid\xe6oHandler", None),
])
def test_damaged_headers_the_fuzz_found(videos, tmp_path, old, new, reason):
    data = videos["h264_24"].read_bytes()
    assert old in data
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data.replace(old, new))
    if reason is None:
        assert probe_video(damaged).num_frames == 72
    else:
        with pytest.raises(VideoDecodeError, match=reason):
            probe_video(damaged)

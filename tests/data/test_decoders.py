"""Decoder selection, the OpenCV decoder against PyAV, frame_indices, and the batched loader."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from lam_fast.data import (
    BatchedClipLoader,
    ClipBatchSampler,
    ClipRequest,
    DecoderUnavailable,
    VideoClipDataset,
    auto_decoder,
    decode_clip,
    decoder_status,
    frame_indices,
    make_dataloader,
    make_decoder,
    probe_video,
)
from lam_fast.data.decoders import PyAVDecoder

CONSTANT_RATE = ("h264_24", "h264_30", "vp9_24", "mpeg4_25")  # landscape: frame ids survive the crop


def test_auto_picks_pyav_on_cpu_and_reports_every_decoder():
    assert auto_decoder("cpu") == "pyav"
    assert make_decoder("auto").name == "pyav"
    status = decoder_status("cpu")
    assert set(status) == {"pyav", "opencv", "dali"}
    assert status["pyav"] is None


def test_unknown_and_unavailable_decoders_raise_clearly(monkeypatch):
    with pytest.raises(ValueError, match="unknown decoder 'ffmpeg'.*pyav"):
        make_decoder("ffmpeg")
    from lam_fast.data.decoders import registry

    monkeypatch.setitem(registry._REQUIREMENT, "opencv", ("no_such_module_xyz", "pip install it"))
    with pytest.raises(DecoderUnavailable, match="opencv.*no_such_module_xyz.*pip install it"):
        make_decoder("opencv")


@pytest.mark.parametrize("name", CONSTANT_RATE)
@pytest.mark.parametrize(("start", "num_frames", "fps"), [(0.0, 5, 4.0), (0.37, 6, 3.0), (1.1, 4, 8.0),
                                                         (0.5, 3, 60.0)])
def test_frame_indices_match_pyav_timestamp_selection(videos, read_frame_ids, name, start, num_frames, fps):
    # On constant-rate video the index rule equals decode_clip's timestamp rule (frame ids are
    # painted into each synthetic frame).
    info = probe_video(videos[name])
    clip = decode_clip(videos[name], start, num_frames, fps, 16)
    assert frame_indices(info, start, num_frames, fps) == read_frame_ids(clip)


def test_frame_indices_ties_go_down_and_clamp_to_the_last_frame(videos):
    info = probe_video(videos["h264_24"])  # 72 frames at 24 fps
    half = float(Fraction(1, 48))  # exactly midway between frames 0 and 1
    assert frame_indices(info, half, 1, 1.0) == [0]
    assert frame_indices(info, 2.99, 3, 1.0) == [71, 71, 71]


@pytest.mark.parametrize("name", CONSTANT_RATE)
def test_opencv_decoder_picks_the_same_frames_as_pyav(videos, read_frame_ids, name):
    pytest.importorskip("cv2")
    info = probe_video(videos[name])
    opencv, pyav = make_decoder("opencv"), make_decoder("pyav")
    for start, num_frames, fps in ((0.0, 4, 4.0), (0.9, 5, 3.0), (1.3, 6, 30.0)):
        request = ClipRequest(info, start, num_frames, fps, 24)
        a, b = opencv.decode(request), pyav.decode(request)
        assert a.shape == b.shape == (num_frames, 3, 24, 24) and a.dtype == torch.uint8
        assert read_frame_ids(a) == read_frame_ids(b)
        # Same frames; OpenCV's area filter and swscale's bilinear differ at the synthetic hard
        # band edges, and the YUV->RGB conversions by a level or two elsewhere.
        assert (a.float() - b.float()).abs().median() <= 2


def test_opencv_decoder_errors_and_refuses_tar_members(videos):
    pytest.importorskip("cv2")
    from lam_fast.data import TarMember, VideoDecodeError

    decoder = make_decoder("opencv")
    info = probe_video(videos["h264_24"])
    member = TarMember("x.tar", "a.mp4", 512, 10)
    assert "plain files only" in decoder.unsupported(info.__class__(**{**info.__dict__, "member": member}))
    assert decoder.unsupported(info) is None
    broken = info.__class__(**{**info.__dict__, "path": str(videos["random"])})
    with pytest.raises(VideoDecodeError):
        decoder.decode(ClipRequest(broken, 0.0, 4, 4.0, 16))


def test_dataset_with_opencv_decoder_trains_the_same_clip_stream(videos, read_frame_ids):
    pytest.importorskip("cv2")
    paths = [videos[name] for name in ("h264_24", "vp9_24")]
    a = VideoClipDataset(paths, num_frames=4, fps=4.0, image_size=16, decoder="opencv")
    b = VideoClipDataset(paths, num_frames=4, fps=4.0, image_size=16, decoder="pyav")
    for index in range(2 * len(a)):
        assert read_frame_ids(a[index]["video"]) == read_frame_ids(b[index]["video"])


class _BatchedPyAV(PyAVDecoder):
    """A batched decoder (the DALI code path of the loaders) that decodes with PyAV."""

    batched = True

    def __init__(self):
        super().__init__("cpu")
        self.calls = 0

    def decode_batch(self, requests):
        self.calls += 1
        return super().decode_batch(requests)


def test_batched_loader_yields_the_dataloader_batches_and_counts_failures(videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(videos["h264_24"].read_bytes())
    paths = [videos["h264_24"], videos["h264_30"], broken]
    plain = VideoClipDataset(paths, num_frames=4, fps=4.0, image_size=16, decoder="pyav")
    decoder = _BatchedPyAV()
    batched = VideoClipDataset(paths, num_frames=4, fps=4.0, image_size=16, decoder=decoder)
    broken.write_bytes(b"\0" * 100)  # the file breaks after probing: a read failure at decode time
    loader = make_dataloader(batched, batch_size=2, seed=3, start_step=1)
    assert isinstance(loader, BatchedClipLoader)
    reference = make_dataloader(plain, batch_size=2, seed=3, start_step=1)
    with pytest.warns(UserWarning, match="cannot read a clip"):
        got = [batch for batch, _ in zip(loader, range(6), strict=False)]
        want = [batch for batch, _ in zip(reference, range(6), strict=False)]
    loader.close()
    for a, b in zip(got, want, strict=True):
        assert a["index"].tolist() == b["index"].tolist()
        assert a["skipped"] == b["skipped"]
        assert torch.equal(a["video"], b["video"])
    assert sum(batch["skipped"] for batch in got) > 0
    assert batched.read_failures >= sum(batch["skipped"] for batch in got)  # + prefetched batches
    assert decoder.calls >= 6  # one decode_batch per batch (plus prefetched ones)


def test_batched_loader_raises_errors_of_its_thread(videos):
    class Exploding(_BatchedPyAV):
        def decode_batch(self, requests):
            raise RuntimeError("decoder exploded")

    dataset = VideoClipDataset([videos["h264_24"]], num_frames=4, fps=4.0, image_size=16, decoder=Exploding())
    loader = BatchedClipLoader(dataset, ClipBatchSampler(len(dataset), 1, seed=0))
    with pytest.raises(RuntimeError, match="decoder exploded"):
        next(iter(loader))


def test_batched_loader_thread_stops_with_its_iterator_and_on_close(videos):
    import gc
    import threading

    def decode_threads():
        return [t for t in threading.enumerate() if t.name == "lam_fast-decode" and t.is_alive()]

    dataset = VideoClipDataset([videos["h264_24"]], num_frames=4, fps=4.0, image_size=16, decoder=_BatchedPyAV())
    loader = make_dataloader(dataset, batch_size=1, seed=0)
    first = iter(loader)
    next(first)
    second = iter(loader)  # a new iteration stops and joins the first one's thread
    next(second)
    assert len(decode_threads()) == 1
    del first, second
    gc.collect()
    for thread in decode_threads():
        thread.join(timeout=5)
    assert decode_threads() == []  # the consumer generator's finally stopped it
    iterator = iter(loader)
    next(iterator)
    loader.close()
    assert decode_threads() == []


def test_tar_members_are_read_by_range_not_whole(videos, tmp_path, monkeypatch):
    import tarfile

    import lam_fast.data.video as video_module
    from lam_fast.data import TarMember

    import av
    import numpy as np

    source = tmp_path / "noise.mp4"  # ~1 MB: noise does not compress, so a GOP is a small part
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 128, 3), dtype=np.uint8)
    with av.open(str(source), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=24, options={"g": "12", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for image in noise:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(source, arcname="a.mp4")
    with tarfile.open(shard) as tar:
        entry = tar.getmember("a.mp4")
    member = TarMember(str(shard), "a.mp4", entry.offset_data, entry.size)
    read = []
    original = video_module._MemberReader.readinto

    def counting(self, buffer):
        count = original(self, buffer)
        read.append(count)
        return count

    monkeypatch.setattr(video_module._MemberReader, "readinto", counting)
    clip = decode_clip(member, 3.5, 2, 8.0, 16)
    assert torch.equal(clip, decode_clip(source, 3.5, 2, 8.0, 16))
    assert 0 < sum(read) < 0.8 * entry.size  # the index and the last GOP, not the whole member

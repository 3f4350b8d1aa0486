"""State caches end to end: the writer (lam_fast.training.encode.encode_to_cache), the reader
(lam_fast.data.cache: StateCacheDataset, read_manifest) and `lam-fast encode` (lam_fast.cli.data)."""

from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lam_fast.cli.data import encode_main
from lam_fast.errors import UserError
from lam_fast.data import VideoClipDataset, VideoInfo, VideoRecord, cache
from lam_fast.data.cache import CachedVideo, StateCacheDataset, is_state_cache, read_manifest
from lam_fast.data.decoders import PyAVDecoder
from lam_fast.data.video import VideoDecodeError, decode_clip
from lam_fast.models.encoders import build_encoder, normalize_encoder_options
from lam_fast.training import encode
from lam_fast.training.encode import encode_to_cache

IMAGE, PATCH, FPS = 32, 8, 4.0
# 3 s, 3 s and 1 s videos: 13, 13 and 5 states at 4 fps (frames at 0, 0.25, ..., duration).
NAMES = ("h264_24", "h264_30", "short")
PIXELS = {"encoder": "pixels", "image_size": IMAGE, "fps": FPS, "encoder_options": {"patch_size": PATCH},
          "decoder": "pyav", "progress": False}


@pytest.fixture(scope="module")
def folder(videos, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache_videos")
    for name in NAMES:
        shutil.copy(videos[name], root / videos[name].name)
    return root


@pytest.fixture(scope="module")
def bad_folder(videos, folder, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache_bad_videos")
    for path in folder.iterdir():
        shutil.copy(path, root / path.name)
    for name in ("random", "empty"):
        shutil.copy(videos[name], root / videos[name].name)
    return root


@pytest.fixture(scope="module")
def fp32_cache(folder, tmp_path_factory) -> Path:
    # batch_frames=5: chunks of 5, 5, 3 frames for a 13-state video
    return encode_to_cache(folder, tmp_path_factory.mktemp("c") / "fp32", dtype="fp32", batch_frames=5, **PIXELS)


@pytest.fixture(scope="module")
def bf16_cache(folder, tmp_path_factory) -> Path:
    return encode_to_cache(folder, tmp_path_factory.mktemp("c") / "bf16", **PIXELS)


def _pixels():
    return build_encoder("pixels", IMAGE, patch_size=PATCH)


def _direct(encoder, name: str, start_state: int, num_frames: int) -> torch.Tensor:
    """States of the clip at ``start_state`` encoded straight from the video."""
    clip = decode_clip(name, start_state * encoder.frames_per_state / FPS, num_frames, FPS, IMAGE)
    return encoder.encode(clip[None])[0]


def _shard_tensors(path: Path) -> dict[str, torch.Tensor]:
    manifest = read_manifest(path)
    result = {}
    for entry in manifest["videos"]:
        with safe_open(str(path / entry["shard"]), framework="pt") as handle:
            result[entry["name"]] = handle.get_tensor(entry["key"])
    return result


# format ------------------------------------------------------------------------------------------


def test_manifest_describes_the_cache(fp32_cache, folder):
    assert is_state_cache(fp32_cache)
    assert not (fp32_cache / "progress.json").exists()
    assert sorted(p.name for p in fp32_cache.iterdir()) == ["manifest.json", "states-00000.safetensors"]
    manifest = read_manifest(fp32_cache)
    assert manifest["format"] == "lam_fast.state_cache" and manifest["version"] == 1
    assert manifest["encoder"] == {"name": "pixels", "options": {"patch_size": PATCH}, "dim": 3 * PATCH**2,
                                   "grid": [4, 4], "num_tokens": 16, "frames_per_state": 1}
    assert (manifest["fps"], manifest["image_size"], manifest["dtype"]) == (FPS, IMAGE, "fp32")
    counts = {Path(v["name"]).stem: v["num_states"] for v in manifest["videos"]}
    assert counts == {"h264_24": 13, "h264_30": 13, "short": 5}
    assert manifest["skipped"] == [] and manifest["num_states"] == 31
    assert {"lam_fast", "torch", "safetensors"} <= set(manifest["versions"])
    tensors = _shard_tensors(fp32_cache)
    assert all(t.dtype == torch.float32 and t.shape[1:] == (16, 192) for t in tensors.values())


def test_is_state_cache_rejects_other_paths(tmp_path, folder):
    assert not is_state_cache(tmp_path)
    assert not is_state_cache(tmp_path / "missing")
    assert not is_state_cache(folder)
    assert not is_state_cache(None)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something else"}))
    assert not is_state_cache(tmp_path)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cached_states_equal_direct_encoding(dtype, fp32_cache, bf16_cache):
    path = fp32_cache if dtype == "fp32" else bf16_cache
    encoder = _pixels()
    ds = StateCacheDataset(path, num_frames=4, seed=3)
    assert read_manifest(path)["dtype"] == dtype
    for index in range(2 * len(ds)):
        item = ds[index]
        video, _, start = ds.clip_location(index)
        assert item["index"] == index
        states = item["states"]
        assert states.dtype == torch.float32 and states.shape == (4, 16, 192)
        direct = _direct(encoder, ds.videos[video].path, start, 4)
        if dtype == "fp32":
            torch.testing.assert_close(states, direct, rtol=0, atol=1e-6)
        else:
            assert torch.equal(states, direct.bfloat16().float())


# dataset index scheme ----------------------------------------------------------------------------


def test_epoch_covers_each_slot_once_and_starts_stay_in_their_stratum(fp32_cache):
    ds = StateCacheDataset(fp32_cache, num_frames=4)
    slots = [max(1, v.num_states // 4) for v in ds.videos]
    assert len(ds) == sum(slots) == 3 + 3 + 1
    for epoch in range(3):
        seen = Counter()
        for index in range(epoch * len(ds), (epoch + 1) * len(ds)):
            video, slot, start = ds.clip_location(index)
            seen[video, slot] += 1
            valid = ds.videos[video].num_states - 4 + 1
            n = slots[video]
            assert slot * valid // n <= start < (slot + 1) * valid // n
        assert seen == Counter({(v, s): 1 for v, n in enumerate(slots) for s in range(n)})


def test_deterministic_per_seed_and_index_new_starts_per_epoch(fp32_cache):
    a = StateCacheDataset(fp32_cache, num_frames=4, seed=7)
    b = StateCacheDataset(fp32_cache, num_frames=4, seed=7)
    other = StateCacheDataset(fp32_cache, num_frames=4, seed=8)
    n = len(a)
    for index in (0, 5, 3 * n + 1, 10**9):
        assert a.clip_location(index) == b.clip_location(index)
        assert torch.equal(a[index]["states"], b[index]["states"])
    starts = lambda ds, epoch: [ds.clip_location(epoch * n + i)[2] for i in range(n)]  # noqa: E731
    assert len({tuple(starts(a, epoch)) for epoch in range(6)}) > 1
    assert any(starts(a, epoch) != starts(other, epoch) for epoch in range(6))
    with pytest.raises(IndexError):
        a.clip_location(-1)


def test_short_videos_are_skipped_and_reported(fp32_cache):
    with pytest.warns(UserWarning, match="shorter than one clip"):
        ds = StateCacheDataset(fp32_cache, num_frames=8)
    assert [Path(name).stem for name, _ in ds.skipped] == ["short"]
    assert "5 states < 8" in ds.skipped[0][1]
    assert len(ds) == 2 and ds.read_failures == 0
    assert ds.state_shape == (16, 192) and ds.frames_per_state == 1 and ds.num_frames == 8
    assert ds.encoder_info["name"] == "pixels"
    with warnings.catch_warnings(), pytest.raises(ValueError, match="no video"):
        warnings.simplefilter("ignore")
        StateCacheDataset(fp32_cache, num_frames=14)


def test_expect_mismatch_names_each_key_with_both_values(fp32_cache):
    good = {"encoder": "pixels", "encoder_options": {"patch_size": PATCH}, "image_size": IMAGE, "fps": FPS}
    StateCacheDataset(fp32_cache, num_frames=4, expect=good)
    # options are compared as given: the caller fills in the defaults (TrainConfig.encoder_options does)
    StateCacheDataset(fp32_cache, num_frames=4, expect=good | {"encoder_options": normalize_encoder_options("pixels", {})})
    with pytest.raises(ValueError, match="encoder_options: cache has {'patch_size': 8}, expected {}"):
        StateCacheDataset(fp32_cache, num_frames=4, expect=good | {"encoder_options": {}})
    with pytest.raises(ValueError) as info:
        StateCacheDataset(fp32_cache, num_frames=4, expect=good | {
            "encoder": "effnet", "encoder_options": normalize_encoder_options("effnet", {}), "fps": 8.0})
    message = str(info.value)
    assert "encoder: cache has 'pixels', expected 'effnet'" in message
    assert "encoder_options: cache has {'patch_size': 8}, expected {'stage': 4}" in message
    assert "fps: cache has 4.0, expected 8.0" in message
    assert "image_size" not in message
    with pytest.raises(ValueError, match="image_size: cache has 32, expected 64"):
        StateCacheDataset(fp32_cache, num_frames=4, expect=good | {"image_size": 64})
    with pytest.raises(ValueError, match="encoder_options: cache has {'patch_size': 8}, expected {'patch_size': 4}"):
        StateCacheDataset(fp32_cache, num_frames=4, expect=good | {"encoder_options": {"patch_size": 4}})
    with pytest.raises(ValueError, match="unknown expect key"):
        StateCacheDataset(fp32_cache, num_frames=4, expect={"encodr": "pixels"})


def test_not_a_cache_and_unfinished_cache_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="not a state cache"):
        StateCacheDataset(tmp_path, num_frames=4)
    (tmp_path / "progress.json").write_text("{}")
    with pytest.raises(ValueError, match="unfinished"):
        StateCacheDataset(tmp_path, num_frames=4)


def test_dataloader_workers_read_lazily(fp32_cache):
    ds = StateCacheDataset(fp32_cache, num_frames=4)
    ds[0]  # a handle opened in the parent must not leak into the workers
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, sampler=range(2 * len(ds)))
    batches = list(loader)
    states = torch.cat([b["states"] for b in batches])
    assert states.shape == (2 * len(ds), 4, 16, 192)
    assert torch.equal(states, torch.stack([ds[i]["states"] for i in range(2 * len(ds))]))


# robustness --------------------------------------------------------------------------------------


class _FailingDecoder(PyAVDecoder):
    """PyAV, except that every clip of a video whose name contains ``fail`` cannot be decoded."""

    def __init__(self, fail: str):
        super().__init__("cpu")
        self.fail = fail

    def decode(self, request):
        if self.fail in request.info.path:
            raise VideoDecodeError(f"{request.info.path!r}: simulated mid-stream corruption")
        return super().decode(request)


def test_bad_files_are_skipped_and_listed(bad_folder, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = encode_to_cache(bad_folder, tmp_path / "c", **(PIXELS | {"decoder": _FailingDecoder("h264_30")}))
    manifest = read_manifest(out)
    assert sorted(Path(v["name"]).stem for v in manifest["videos"]) == ["h264_24", "short"]
    skipped = {Path(name).stem: reason for name, reason in manifest["skipped"]}
    assert set(skipped) == {"random", "empty", "h264_30"}
    assert "simulated mid-stream corruption" in skipped["h264_30"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = StateCacheDataset(out, num_frames=4)
    assert {Path(name).stem for name, _ in ds.skipped} == {"random", "empty", "h264_30"}


def test_shard_rollover(folder, tmp_path, fp32_cache):
    # 13 states * 16 * 192 * 4 bytes = 160 KB per 3 s video; 0.2 MiB holds one, not two
    out = encode_to_cache(folder, tmp_path / "c", dtype="fp32", shard_size_mb=0.2, **PIXELS)
    manifest = read_manifest(out)
    assert manifest["shards"] == ["states-00000.safetensors", "states-00001.safetensors",
                                  "states-00002.safetensors"]
    assert [v["shard"] for v in manifest["videos"]] == manifest["shards"]
    reference = _shard_tensors(fp32_cache)
    assert all(torch.equal(t, reference[name]) for name, t in _shard_tensors(out).items())
    ds, ref = StateCacheDataset(out, num_frames=4), StateCacheDataset(fp32_cache, num_frames=4)
    for index in range(len(ds)):
        assert torch.equal(ds[index]["states"], ref[index]["states"])


def test_interrupted_encode_resumes_without_redoing_finished_shards(folder, tmp_path, monkeypatch, fp32_cache):
    out = tmp_path / "c"
    written = []
    real_write = encode._write_shard

    def crash_after_first(*args, **kwargs):
        if written:
            raise KeyboardInterrupt("simulated crash")
        written.append(real_write(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(encode, "_write_shard", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        encode_to_cache(folder, out, dtype="fp32", shard_size_mb=0.2, **PIXELS)
    assert not (out / "manifest.json").exists() and not is_state_cache(out)
    progress = json.loads((out / "progress.json").read_text())
    assert [s["file"] for s in progress["shards"]] == ["states-00000.safetensors"]
    first = (out / "states-00000.safetensors").stat()
    (out / "states-00001.safetensors.tmp").write_bytes(b"half a shard")  # a crash mid-write
    (out / "states-00007.safetensors").write_bytes(b"renamed, but not recorded")

    # other settings are refused, the unfinished work stays
    monkeypatch.setattr(encode, "_write_shard", real_write)
    with pytest.raises(ValueError, match="dtype: unfinished encode has 'fp32', now 'bf16'"):
        encode_to_cache(folder, out, dtype="bf16", shard_size_mb=0.2, **PIXELS)

    encoded = []
    real_encode = encode._encode_video
    monkeypatch.setattr(encode, "_encode_video", lambda info, *a, **k: encoded.append(info.path) or
                        real_encode(info, *a, **k))
    encode_to_cache(folder, out, dtype="fp32", shard_size_mb=0.2, **PIXELS)
    assert is_state_cache(out) and not (out / "progress.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "states-00000.safetensors",
                                                     "states-00001.safetensors", "states-00002.safetensors"]
    again = (out / "states-00000.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert len(encoded) == 2 and Path(encoded[0]).stem == "h264_30"
    reference = read_manifest(fp32_cache)
    manifest = read_manifest(out)
    strip = lambda videos: [{k: v[k] for k in ("name", "key", "num_states", "duration")} for v in videos]  # noqa: E731
    assert strip(manifest["videos"]) == strip(reference["videos"])
    tensors, expected = _shard_tensors(out), _shard_tensors(fp32_cache)
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[name], expected[name]) for name in tensors)


def test_out_directory_checks(folder, tmp_path, fp32_cache):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        encode_to_cache(folder, junk, **PIXELS)
    assert (junk / "notes.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="already holds a finished state cache"):
        encode_to_cache(folder, fp32_cache, **PIXELS)
    with pytest.raises(ValueError, match="dtype"):
        encode_to_cache(folder, tmp_path / "x", **(PIXELS | {"dtype": "int8"}))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "progress.json.tmp").write_text("{")  # a crash while the first progress file was written
    assert is_state_cache(encode_to_cache(folder, empty, **PIXELS))
    assert sorted(p.name for p in empty.iterdir()) == ["manifest.json", "states-00000.safetensors"]


# command line ------------------------------------------------------------------------------------


def test_encode_main_writes_a_cache(folder, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--data", str(folder), "--out", str(out), "--encoder", "pixels", "--patch-size", "16",
            "--image-size", str(IMAGE), "--fps", "2", "--decoder", "pyav", "--dtype", "fp16",
            "--shard-size-mb", "0.01", "--no-progress"]
    assert encode_main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 videos" in printed and "0 skipped" in printed and "3 shard(s)" in printed
    manifest = read_manifest(out)
    assert manifest["encoder"]["options"] == {"patch_size": 16} and manifest["dtype"] == "fp16"
    assert manifest["fps"] == 2.0
    ds = StateCacheDataset(out, num_frames=2, expect={"encoder": "pixels", "encoder_options": {"patch_size": 16},
                                                      "image_size": IMAGE, "fps": 2.0})
    assert ds[0]["states"].shape == (2, 4, 768)
    with pytest.raises(UserError, match="already holds a finished state cache"):  # one line, exit 2 via lam-fast
        encode_main(argv)


def test_encode_main_refuses_an_option_the_encoder_does_not_take(folder, tmp_path, capsys):
    # --patch-size used to be ignored silently for effnet
    argv = ["--data", str(folder), "--out", str(tmp_path / "e"), "--encoder", "effnet", "--patch-size", "8",
            "--image-size", str(IMAGE), "--fps", "2", "--no-progress"]
    with pytest.raises(UserError, match="option 'patch_size' does not apply to encoder 'effnet'"):
        encode_main(argv)
    assert not (tmp_path / "e").exists()


# one type of ``videos`` --------------------------------------------------------------------------


def test_both_datasets_hold_video_records(folder, fp32_cache):
    """VideoClipDataset and StateCacheDataset keep the same kind of thing in ``videos``."""
    clips = VideoClipDataset(folder, num_frames=4, fps=FPS, image_size=IMAGE, decoder="pyav")
    states = StateCacheDataset(fp32_cache, num_frames=4)
    assert all(type(v) is VideoInfo for v in clips.videos)
    assert all(type(v) is CachedVideo for v in states.videos)
    assert all(isinstance(v, VideoRecord) for v in clips.videos + states.videos)
    assert [v.path for v in states.videos] == [v.path for v in clips.videos]
    assert [v.duration for v in states.videos] == [v.duration for v in clips.videos]
    entry = read_manifest(fp32_cache)["videos"][0]
    assert states.videos[0] == CachedVideo(path=entry["name"], duration=entry["duration"], shard=entry["shard"],
                                           key=entry["key"], num_states=entry["num_states"])


def test_old_cache_paths_of_the_writer_resolve_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="lam_fast.training.encode.encode_to_cache"):
        assert cache.encode_to_cache is encode_to_cache
    with pytest.warns(DeprecationWarning, match="lam_fast.cli.data.encode_main"):
        assert cache.encode_main is encode_main


# 2-frame tubelets --------------------------------------------------------------------------------


def _tiny_vjepa2_config():
    transformers = pytest.importorskip("transformers")
    return transformers.VJEPA2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8, crop_size=IMAGE,
        tubelet_size=2, frames_per_clip=4, pred_hidden_size=16, pred_num_hidden_layers=1,
        pred_num_attention_heads=2, pred_num_mask_tokens=2, num_pooler_layers=1,
    )


@pytest.fixture(scope="module")
def vjepa2_cache(folder, tmp_path_factory):
    config = _tiny_vjepa2_config()
    torch.manual_seed(0)  # encode_to_cache builds the encoder first: the same random weights as below
    out = encode_to_cache(folder, tmp_path_factory.mktemp("c") / "vjepa2", encoder="vjepa2", image_size=IMAGE,
                          fps=FPS, encoder_options={"config": config}, decoder="pyav", dtype="fp32",
                          batch_frames=5, progress=False)
    torch.manual_seed(0)
    return out, build_encoder("vjepa2", IMAGE, config=config)


def test_tubelet_states_align_with_clips(vjepa2_cache):
    out, encoder = vjepa2_cache
    manifest = read_manifest(out)
    assert manifest["encoder"]["frames_per_state"] == 2
    # 13 frames -> 12 -> 6 states; the 1 s video: 5 frames -> 4 -> 2 states
    assert {Path(v["name"]).stem: v["num_states"] for v in manifest["videos"]} == \
        {"h264_24": 6, "h264_30": 6, "short": 2}
    ds = StateCacheDataset(out, num_frames=4)
    assert len(ds) == 3 + 3 + 1
    for index in range(2 * len(ds)):
        video, _, start = ds.clip_location(index)
        states = ds[index]["states"]
        assert states.shape == (2, 16, 32)
        torch.testing.assert_close(states, _direct(encoder, ds.videos[video].path, start, 4),
                                   rtol=1e-5, atol=1e-5)
    for bad in (3, 5, 1):
        with pytest.raises(ValueError, match="multiple of the cache encoder's frames_per_state=2"):
            StateCacheDataset(out, num_frames=bad)

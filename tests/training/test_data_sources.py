"""Every data source and decoder trains through the same loop with no other change: a CSV list,
WebDataset shards, an encoded-state cache, the OpenCV and DALI (CPU, VP9) decoders; plus the
DeepSpeed launcher on shards and on a cache."""

import json
import os
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from lam_fast.training import ConfigError, make_config, train

SMALL = dict(engine="local", preset="tiny", image_size=32, patch_size=8, num_frames=4, fps=4.0, batch_size=2,
             latent_dim=16, log_every=1)
ROOT = Path(__file__).resolve().parents[2]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def shards(video_folder, tmp_path_factory) -> str:
    pytest.importorskip("webdataset")
    from lam_fast.data.shard_writer import write_shards

    root = tmp_path_factory.mktemp("shards")
    written = write_shards(sorted(video_folder.glob("*.mp4")), str(root / "train-%06d.tar"), max_count=2)
    assert len(written) == 2
    return str(root / "train-{000000..000001}.tar")


@pytest.fixture(scope="module")
def cache(video_folder, tmp_path_factory) -> Path:
    from lam_fast.training.encode import encode_to_cache

    out = tmp_path_factory.mktemp("cache") / "states"
    encode_to_cache(str(video_folder), out, encoder="pixels", image_size=32, fps=4.0,
                    encoder_options={"patch_size": 8}, dtype="fp32", progress=False)
    return out


def test_csv_list_with_opencv_decoder(video_folder, tmp_path):
    pytest.importorskip("cv2")
    listing = tmp_path / "videos.csv"
    listing.write_text("path,caption\n" + "".join(f"{p},a clip\n" for p in sorted(video_folder.glob("*.mp4"))))
    result = train(make_config(**SMALL, reg="sparse", data=str(listing), decoder="opencv", steps=3,
                               out=str(tmp_path / "run")))
    assert result.step == 3 and result.skipped == 0


def test_shards_train_like_the_folder(video_folder, shards, tmp_path):
    # Same videos, same order, same decoder: the shard run sees exactly the folder run's clips.
    a = train(make_config(**SMALL, reg="noisy", data=shards, steps=3, out=str(tmp_path / "shards")))
    b = train(make_config(**SMALL, reg="noisy", data=str(video_folder), steps=3, out=str(tmp_path / "folder")))
    assert a.step == b.step == 3
    assert [r["loss"] for r in _records(tmp_path / "shards")] == [r["loss"] for r in _records(tmp_path / "folder")]


def test_state_cache_trains_and_refuses_another_encoder(cache, tmp_path, monkeypatch):
    import lam_fast.models.encoders as encoders

    def no_encoder(*args, **kwargs):
        raise AssertionError("training from a state cache must not build the frozen encoder")

    monkeypatch.setattr(encoders, "build_encoder", no_encoder)
    result = train(make_config(**SMALL, reg="sparse", data=str(cache), steps=3, out=str(tmp_path / "run")))
    assert result.step == 3 and result.checkpoint is not None
    assert all(r["data/skipped"] == 0 for r in _records(tmp_path / "run"))
    with pytest.raises(ConfigError, match="patch_size"):
        train(make_config(**dict(SMALL, patch_size=4), reg="sparse", data=str(cache), steps=1,
                          out=str(tmp_path / "other")))


def test_dali_cpu_decoder_on_vp9_trains_and_skips_h264(tmp_path, video_folder):
    pytest.importorskip("nvidia.dali")
    av = pytest.importorskip("av")
    folder = tmp_path / "vp9"
    folder.mkdir()
    for source in sorted(video_folder.glob("*.mp4"))[:2]:  # transcode two clips to VP9 WebM
        with av.open(str(source)) as inp, av.open(str(folder / (source.stem + ".webm")), "w") as out:
            stream = out.add_stream("libvpx-vp9", rate=8, options={"deadline": "realtime", "cpu-used": "8"})
            stream.width = stream.height = 48
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, 8)
            for k, frame in enumerate(inp.decode(video=0)):
                frame.pts, frame.time_base = k, Fraction(1, 8)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    (folder / "h264.mp4").write_bytes(next(video_folder.glob("*.mp4")).read_bytes())
    with pytest.warns(UserWarning, match="h264"):
        result = train(make_config(**SMALL, reg="sparse", data=str(folder), decoder="dali", steps=2,
                                   out=str(tmp_path / "run")))
    assert result.step == 2 and result.skipped == 1  # the H.264 file: DALI's CPU decoder lacks it
    assert all(r["data/skipped"] == 1 for r in _records(tmp_path / "run"))


def _deepspeed(args, tmp_path):
    pytest.importorskip("deepspeed")
    env = dict(os.environ, TORCHDYNAMO_DISABLE="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    with socket.socket() as probe:  # a free rendezvous port: the default 29500 may be taken
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--master_port", str(port), str(ROOT / "train" / "run.py"),
           "--reg", "sparse",
           "--preset", "tiny", "--image-size", "32", "--num-frames", "4", "--fps", "4", "--batch-size", "2",
           "--log-every", "1", "--steps", "2", "--out", str(tmp_path / "run"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_deepspeed_trains_from_shards_and_from_a_cache(shards, cache, tmp_path):
    _deepspeed(["--data", shards, "--decoder", "pyav"], tmp_path / "shards")
    _deepspeed(["--data", str(cache)], tmp_path / "cache")
    for name in ("shards", "cache"):
        meta = json.loads((tmp_path / name / "run" / "checkpoints" / "step_00000002" / "trainer.json").read_text())
        assert meta["engine"] == "deepspeed" and meta["step"] == 2


class _FakeRanks:
    """sum_over_ranks as if a second rank had probed ``other`` (count, digest)."""

    def __init__(self, other_names, other_count):
        import zlib

        digest = zlib.crc32("\n".join(other_names).encode()) & 0xFFFFF
        self.other = [other_count, other_count * other_count, digest, digest * digest]

    def sum_over_ranks(self, values):
        return [float(a + b) for a, b in zip(values, self.other, strict=True)]


class _Videos(list):
    def __init__(self, names, clips):
        from types import SimpleNamespace

        super().__init__()
        self.videos = [SimpleNamespace(path=name) for name in names]
        self.clips = clips

    def __len__(self):
        return self.clips


def test_ranks_that_probed_different_data_refuse_to_train():
    from types import SimpleNamespace

    from lam_fast.training.loop import Trainer

    mine = _Videos(["a.mp4", "b.mp4"], 6)
    same = SimpleNamespace(world_size=2, dataset=mine, engine=_FakeRanks(["a.mp4", "b.mp4"], 6),
                           cfg=SimpleNamespace(data="d"))
    Trainer._check_same_data(same)  # agreeing ranks pass
    for names, clips in ((["a.mp4"], 3), (["a.mp4", "c.mp4"], 6)):  # a file missing / another file
        other = SimpleNamespace(world_size=2, dataset=mine, engine=_FakeRanks(names, clips),
                                cfg=SimpleNamespace(data="d"))
        with pytest.raises(ConfigError, match="ranks see different data"):
            Trainer._check_same_data(other)

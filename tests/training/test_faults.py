"""Faults as a user meets them (issue 13), as subprocesses of ``train/run.py --engine local``: a kill -9
at each phase of a checkpoint save (the injection points of ``lam_fast.io.fault_point``), then
``--resume``, gives the uninterrupted run; a second trainer on a locked ``--out`` is refused, naming
the holder's pid and host, and the lock of a kill -9'd holder does not block."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lam_fast.io import FAULT_ENV

ROOT = Path(__file__).resolve().parents[2]
RUN = str(ROOT / "train" / "run.py")
ARGS = ["--engine", "local", "--preset", "tiny", "--image-size", "32", "--patch-size", "8", "--num-frames", "4",
        "--fps", "4", "--batch-size", "2", "--num-workers", "0", "--log-every", "1", "--reg", "noisy",
        "--steps", "4", "--save-every", "2", "--keep-last", "5"]


def _train(video_folder, out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if fault is not None:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, RUN, *ARGS, "--data", str(video_folder), "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def uninterrupted(video_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "full"
    _ok(_train(video_folder, out))
    return out


# phase@n: killed on the n-th visit (saves at steps 2 and 4: @2 is the second save, with step 2 intact)
PHASES = ["save:start@2", "mid_write:optimizer_rank0.safetensors@2", "save:after_optimizer@2",
          "mid_write:model.safetensors@2", "mid_write:trainer.json@1", "save:before_rename@2",
          "save:before_latest@2"]


@pytest.mark.parametrize("fault", PHASES)
def test_kill_at_each_phase_of_a_save_then_resume_equals_the_uninterrupted_run(video_folder, tmp_path, uninterrupted,
                                                                               fault):
    out = tmp_path / "run"
    killed = _train(video_folder, out, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    _ok(_train(video_folder, out, "--resume"))
    assert _losses(out) == _losses(uninterrupted)
    final = "checkpoints/step_00000004/model.safetensors"
    a, b = load_file(str(uninterrupted / final)), load_file(str(out / final))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert not list((out / "checkpoints").glob("*.tmp"))  # the torn staging folder was cleared


def test_a_second_trainer_on_a_locked_out_is_refused_until_the_holder_dies(video_folder, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom lam_fast.io import DirectoryLock\n"
                               "lock = DirectoryLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(300)",
                               str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = _train(video_folder, out)
        assert refused.returncode != 0
        assert f"pid {holder.pid} on host {socket.gethostname()}" in refused.stderr
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _ok(_train(video_folder, out))  # the kernel dropped the dead holder's lock
    assert sorted(_losses(out)) == [1, 2, 3, 4]

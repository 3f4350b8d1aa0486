"""One error path for every command (issue 13, item 5): a user error (a missing or wrong-kind path, a
missing controller, not a sim dataset, an invalid setting) is one line ``<prog>: error: ...`` on
stderr and exit 2, as subprocesses of ``python -m lam_fast.cli`` and ``python train/run.py``;
``--debug`` (anywhere) or ``LAM_FAST_DEBUG=1`` shows its traceback; an internal error keeps its
traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lam_fast.cli.errors import run_command, split_debug, user_errors
from lam_fast.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--image-size", "32", "--num-frames", "4", "--fps", "4", "--batch-size", "2",
        "--num-workers", "0", "--engine", "local", "--steps", "1"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LAM_FAST_DEBUG"}
    return {**env, **extra}


def _cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lam_fast.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env or _env())


def _train_script(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train/run.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env or _env())


def _user_error(proc: subprocess.CompletedProcess, prog: str, *named: str) -> str:
    """The one line of a user error of ``prog``, which names each of ``named``."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr[-3000:]
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory) -> Path:
    from lam_fast import envs

    out = tmp_path_factory.mktemp("sim") / "reacher"
    try:
        envs.generate("reacher", out, episodes=4, frames=10, image_size=32, fps=4.0)
    except envs.RenderUnavailable as error:
        pytest.skip(f"no MuJoCo offscreen rendering here: {error}")
    return out


@pytest.fixture(scope="module")
def run_dir(sim_data, tmp_path_factory) -> Path:
    """A tiny run (one step) trained on the sim task's videos: it has a checkpoint, no controller."""
    from lam_fast.training import make_config, train

    out = tmp_path_factory.mktemp("run") / "run"
    train(make_config(engine="local", preset="tiny", image_size=32, patch_size=8, num_frames=4, fps=4.0,
                      batch_size=2, num_workers=0, reg="sparse", data=str(sim_data), steps=1, save_every=1,
                      out=str(out)))
    return out


# ---- the list, each a subprocess -------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["leakage", "transfer", "capacity"])
def test_eval_without_a_checkpoint(protocol, tmp_path):
    """eval leakage used to end in a FileNotFoundError traceback where eval capacity was clean."""
    extra = ["--baseline", "/etc"] if protocol == "capacity" else []
    proc = _cli("eval", protocol, "--ckpt", "/etc", *extra, "--data", tmp_path, "--json", tmp_path / "e.json")
    _user_error(proc, "lam-fast eval", "/etc", "checkpoint")


@pytest.mark.parametrize("command", [
    ["train-controller", "--ckpt", "/etc", "--data", "{tmp}", "--out", "{tmp}/c", "--json", "{tmp}/c.json"],
    ["train-decoder", "--ckpt", "/etc", "--data", "{tmp}"],
])
def test_training_on_a_run_without_a_checkpoint(command, tmp_path):
    proc = _cli(*(arg.format(tmp=tmp_path) for arg in command))
    _user_error(proc, f"lam-fast {command[0]}", "/etc", "checkpoint")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", [
    ["plan", "--data", "{tmp}", "--json", "{tmp}/p.json", "--policy", "random"],
    ["train-action-model", "--data", "{tmp}", "--out", "{tmp}/am"],
])
def test_sim_commands_on_a_folder_that_is_not_a_sim_dataset(command, tmp_path):
    proc = _cli(*(arg.format(tmp=tmp_path) for arg in command))
    _user_error(proc, f"lam-fast {command[0]}", f"{tmp_path} is not a sim dataset", "meta.json")


def test_plan_with_a_controller_folder_that_holds_none(sim_data, run_dir, tmp_path):
    proc = _cli("plan", "--data", sim_data, "--json", tmp_path / "p.json", "--policy", "latent", "--ckpt", run_dir,
                "--controller", run_dir)
    _user_error(proc, "lam-fast plan", f"no controller in {run_dir}", "controller.safetensors", "train-controller")
    proc = _cli("plan", "--data", sim_data, "--json", tmp_path / "p.json", "--policy", "action", "--ckpt", run_dir)
    _user_error(proc, "lam-fast plan", f"no action_model in {run_dir}", "train-action-model")
    assert not (tmp_path / "p.json").exists()


def test_train_on_data_that_does_not_exist(tmp_path):
    missing = tmp_path / "nonexistent"
    _user_error(_train_script(*TINY, "--data", missing, "--out", tmp_path / "a"), "train/run.py", str(missing),
                "does not exist")
    _user_error(_cli("train", *TINY, "--data", missing, "--out", tmp_path / "b"), "lam-fast train", str(missing))


def test_train_on_a_folder_whose_videos_are_all_unreadable(tmp_path):
    data = tmp_path / "bad"
    data.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (data / name).write_bytes(os.urandom(2048))
    proc = _train_script("--data", data, "--out", tmp_path / "run", *TINY)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    *warnings, last = proc.stderr.strip().splitlines()  # each skipped file is warned about, then one error
    assert last.startswith("train/run.py: error: no usable video") and "a.mp4" in last and "b.mp4" in last
    assert sum("skips" in line for line in warnings) == 2


def test_eval_on_data_that_does_not_exist(run_dir, tmp_path):
    proc = _cli("eval", "leakage", "--ckpt", run_dir, "--data", tmp_path / "nonexistent", "--json", tmp_path / "e.json")
    _user_error(proc, "lam-fast eval", str(tmp_path / "nonexistent"), "does not exist")


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    _user_error(_cli("report", tmp_path), "lam-fast report", str(tmp_path), "metrics.jsonl")


# ---- bad settings through train/run.py (ConfigError is a UserError) ----------------------------------


def test_a_missing_config_file(tmp_path):
    missing = tmp_path / "nonexistent.yaml"
    _user_error(_train_script("--config", missing, *TINY, "--out", tmp_path / "run"), "train/run.py", str(missing))


def test_a_config_file_with_a_yaml_syntax_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("reg: [sparse\nsteps: 3\n")
    _user_error(_train_script("--config", bad, *TINY, "--out", tmp_path / "run"), "train/run.py", str(bad))


def test_an_invalid_setting(tmp_path):
    proc = _train_script(*TINY, "--reg", "discrete", "--codebook-size", "0", "--data", tmp_path,
                         "--out", tmp_path / "run")
    _user_error(proc, "train/run.py", "codebook_size")


def test_argparse_errors_still_exit_2(tmp_path):
    proc = _cli("eval", "leakage", "--ckpt", "/etc")  # --data and --json missing
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "lam-fast eval: error: the following arguments are required" in proc.stderr
    proc = _cli("no-such-command")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# ---- --debug, LAM_FAST_DEBUG, internal errors ---------------------------------------------------------


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    for proc in (_cli("--debug", "report", tmp_path),  # before the command
                 _cli("report", tmp_path, "--debug"),  # after it
                 _cli("report", tmp_path, env=_env(LAM_FAST_DEBUG="1")),
                 _train_script(*TINY, "--debug", "--data", tmp_path / "nonexistent", "--out", tmp_path / "run")):
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "Traceback" in proc.stderr and ("UserError" in proc.stderr or "NoVideoSource" in proc.stderr)
    assert _cli("report", tmp_path, env=_env(LAM_FAST_DEBUG="0")).returncode == 2


def test_an_internal_error_keeps_its_traceback():
    code = ("import sys\n"
            "from lam_fast.cli.errors import run_command\n"
            "def command(argv):\n"
            "    raise RuntimeError('a fault of the program')\n"
            "sys.exit(run_command('lam-fast boom', command, sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=_env())
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "RuntimeError: a fault of the program" in proc.stderr


def test_in_process(monkeypatch, capsys):
    """The wrapper itself: a UserError is one line and 2 (its lines joined); anything else propagates."""
    def user(argv):
        raise UserError("first line\nsecond line")

    def fault(argv):
        raise RuntimeError("internal")

    assert run_command("lam-fast x", user, ["a"]) == 2
    assert capsys.readouterr().err == "lam-fast x: error: first line; second line\n"
    with pytest.raises(RuntimeError, match="internal"):
        run_command("lam-fast x", fault, [])
    with pytest.raises(UserError):
        run_command("lam-fast x", user, ["--debug"])
    assert run_command("lam-fast x", lambda argv: len(argv), ["a", "--debug", "b"]) == 2  # --debug taken out
    monkeypatch.setenv("LAM_FAST_DEBUG", "1")
    assert split_debug(["a"]) == (["a"], True)
    with pytest.raises(UserError, match="no such") as caught:
        with user_errors(FileNotFoundError):
            raise FileNotFoundError("no such thing")
    assert isinstance(caught.value.__cause__, FileNotFoundError)

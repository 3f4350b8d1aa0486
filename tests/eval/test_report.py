"""`lam-fast report` (markdown + HTML, figures, every result kind classified by content, malformed
files) and the table rendering of train/repro_sweep.py, on result files as their writers write them
(tests/eval/conftest.py: no training here)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lam_fast.cli.report import main as report_main
from lam_fast.errors import UserError
from lam_fast.eval.report import NotARun, summarize_run, to_html

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # only linked, never decoded


def _run(tmp_path: Path, old_files, name="run") -> Path:
    run = tmp_path / name
    (run / "eval").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / s, "pred/rel_to_copy": 1.0 - s / 10})
                                                 for s in (1, 2, 3)) + "\n")
    for file, result in old_files.items():
        (run / "eval" / file).write_text(json.dumps(result))
    # named like a plan, holds a controller result: classified by content
    (run / "eval" / "plan_misnamed.json").write_text(json.dumps({**old_files["controller.json"], "kind": "mlp"}))
    (run / "eval" / "broken.json").write_text("{not json")
    (run / "eval" / "list.json").write_text("[1, 2]")
    (run / "eval" / "unknown_kind.json").write_text(json.dumps({"protocol": "nope", "ratio": 1.0}))
    (run / "eval" / "leakage.png").write_bytes(PNG)
    return run


def test_report_renders_markdown_and_html(tmp_path, capsys, old_files):
    run = _run(tmp_path, old_files)
    out = tmp_path / "out" / "REPORT.md"
    assert report_main([str(run), "--out", str(out)]) == 0
    md, page = out.read_text(), (tmp_path / "out" / "REPORT.html").read_text()
    assert "| leakage | 2 | 0.2 | 0.5 | 2.5 |" in md and "| transfer | 2 | 0.3 | 0.36 | 1.2 |" in md
    assert "## Training" in md
    assert "## Capacity" in md and "| `runs/sp` | sparse | lambda_l1 | 0.02 | 0.21 | 0.7 |" in md
    assert "## Planning" in md and "| plan_latent.json | reacher | latent | cem | 2 | 2 | 0.42 | 0.05 | - | - |" in md
    assert "| plan_random.json | nav | random | uniform | 2 | 2 | - | - | 2.5 | 0.7 |" in md
    assert "## Controllers" in md and "| controller.json | reacher | cross | 0.1 | 0.12 | 1.2 | 0.6 |" in md
    assert "| plan_misnamed.json | reacher | mlp |" in md
    assert "## Action-conditioned models" in md and "| action_model.json | reacher | 40 | 0.05 | 0.1 | 0.5 | 6 / 2 |" in md
    assert "## Decoders" in md and "| decoder.json | pixels | 0.08 | 19.5 | 0.61 | - | - | 3 / 1 |" in md
    assert "![leakage](../run/eval/leakage.png)" in md
    skipped = md.split("## Skipped files")[1]
    assert "`broken.json`" in skipped and "`list.json`" in skipped and "`unknown_kind.json`" in skipped
    assert "'nope'" in skipped and "plan_" not in skipped
    assert page.startswith("<!DOCTYPE html>") and '<img src="../run/eval/leakage.png"' in page
    assert "<table>" in page and "<td>reacher</td>" in page and "broken.json" in page
    printed = capsys.readouterr().out
    assert "leakage ratio 2.500 (error 0.2000 -> 0.5000)" in printed and "transfer ratio 1.200" in printed
    assert "skipped" in printed and "broken.json" in printed and "REPORT.html" in printed


def test_report_default_output_is_in_the_first_run(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    assert report_main([str(run)]) == 0
    assert (run / "report.md").is_file() and (run / "report.html").is_file()


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(NotARun, match="no metrics.jsonl"):
        summarize_run(tmp_path)
    with pytest.raises(UserError, match="no metrics.jsonl"):  # lam-fast report: one line, exit 2
        report_main([str(tmp_path)])


def test_to_html_escapes_text():
    page = to_html("# a <b>\n\n| x | y |\n|---|---|\n| `<i>` | 1 |\n")
    assert "<h1>a &lt;b&gt;</h1>" in page and "<code>&lt;i&gt;</code>" in page and "---" not in page


# --- train/repro_sweep.py -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("repro_sweep", ROOT / "train" / "repro_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, result) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def test_sweep_tables_from_fabricated_results(sweep, tmp_path, old_files):
    out = tmp_path / "repro"
    leak, transfer, capacity = old_files["leakage.json"], old_files["transfer.json"], old_files["capacity.json"]
    _write(out / "sparse_low" / "eval" / "leakage.json", {**leak, "error_original": 0.1, "error_changed": 0.25})
    _write(out / "noisy_high" / "eval" / "transfer.json",
           {**transfer, "error_original": 0.2, "error_transferred": 0.24, "ratio": 1.2})
    _write(out / "discrete_high" / "eval" / "leakage.json", "not a dict")
    _write(out / "discrete_low" / "eval" / "leakage.json", transfer)  # the wrong kind: left out
    capacity["runs"] = [{**capacity["runs"][0], "run": "sp", "knob_value": 0.2, "error": 0.25,
                         "rel_to_baseline": 0.8333}]
    _write(out / "deterministic" / "eval" / "capacity.json", {**capacity, "clips": 3})
    _write(out / "reacher_sparse" / "eval" / "plan_latent.json",
           {**old_files["plan_latent.json"], "episodes": 8, "delta_actions": 0.5})
    _write(out / "nav_sparse" / "eval" / "plan_action.json",
           {**old_files["plan_random.json"], "policy": "action", "method": "cem", "episodes": 8, "ate": 1.5,
            "rpe": 0.25})
    _write(out / "nav_sparse" / "eval" / "controller.json",
           {**old_files["controller.json"], "task": "nav", "kind": "mlp", "rollout_error_idm": 0.2,
            "rollout_error_controller": 0.3, "ratio": 1.5})
    results = sweep.collect(out)
    assert list(results["leakage"]) == ["sparse"] and results["leakage"]["sparse"]["low"].ratio == 2.5
    text = sweep.render_tables(results, {"tables": {"seconds": 61.2, "finished": "today"}}, {"steps": 5})
    assert "## Table 1" in text and "## Table 2" in text and "steps: 5" in text
    table1 = text.split("## Table 1")[1].split("## Table 2")[0]
    assert "| sparse (0.2 / 0.02) | 0.100 -> 0.250 (x2.50) | 0.28 -> 0.66 (x2.30) | - | 0.20 -> 0.50 (x2.40) |" in table1
    assert "| discrete (8 / 256) | - | 0.34 -> 0.69 (x2.00) | - | 0.29 -> 0.68 (x2.30) |" in table1
    table2 = text.split("## Table 2")[1]
    assert "| noisy (0.01 / 0.0001) | - | 0.30 -> 0.34 (x1.13) | 0.200 -> 0.240 (x1.20) | 0.20 -> 0.26 (x1.34) |" in table2
    assert "| `sp` | sparse | lambda_l1 | 0.2 | 0.2500 | 0.833 |" in text
    assert "| latent (sparse + controller) | cem | 8 | 0.500 | 0.050 |" in text
    assert "| action-conditioned | cem | 8 | 1.500 | 0.250 | RECON ATE/RPE: NWM" in text
    assert "| nav | mlp | 0.200 -> 0.300 (x1.50) | 0.600 |" in text
    assert "| tables | 61 s | today |" in text and "| planning | - | - |" in text
    empty = sweep.render_tables(sweep.collect(tmp_path / "nothing"))
    assert "no capacity results yet" in empty and "0.28 -> 0.66 (x2.30)" in empty


def test_sweep_checkpoint_step(sweep, tmp_path):
    run = tmp_path / "run"
    assert sweep.checkpoint_step(run) is None
    _write(run / "checkpoints" / "step_00000007" / "trainer.json", {"step": 7})
    assert sweep.checkpoint_step(run) == 7
    _write(run / "checkpoints" / "step_00000009" / "trainer.json", {"step": 9})
    (run / "checkpoints" / "latest").write_text("step_00000009\n")
    assert sweep.checkpoint_step(run) == 9


def test_sweep_dry_run_prints_the_commands(sweep, tmp_path, capsys):
    assert sweep.main(["--out", str(tmp_path / "r"), "--steps", "7", "--data", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "train --reg sparse --preset tiny --encoder pixels" in printed and "--lambda-l1 0.2" in printed
    assert "--codebook-size 256" in printed and "--beta 0.0001" in printed and "--reg deterministic" in printed
    assert "eval capacity --ckpt" in printed and "--baseline" in printed
    assert "sim generate --task nav --episodes 48 --frames 16" in printed
    assert "--fps 4 --num-frames 8" in printed and "plan --policy random" in printed
    assert "train-controller --ckpt" in printed and "train-action-model" in printed
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        sweep.main(["--stages", "tables,nope", "--dry-run"])


def test_sweep_names_a_failing_command(sweep, tmp_path):
    runner = sweep.Runner(tmp_path)
    with pytest.raises(SystemExit, match=r"FAILED \(exit status 3\).*-c 'import sys; sys.exit\(3\)'"):
        runner.run([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert "sys.exit(3)" in (tmp_path / "commands.log").read_text()


def test_sweep_help():
    done = subprocess.run([sys.executable, str(ROOT / "train" / "repro_sweep.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for flag in ("--out", "--steps", "--data", "--skip-train", "--stages", "--force"):
        assert flag in done.stdout


def test_sweep_reuses_what_it_built_with_the_same_settings(sweep, tmp_path):
    import argparse

    calls = []
    runner = sweep.Runner(tmp_path)
    runner.lam = lambda *cmd: (calls.append(cmd), target.mkdir(exist_ok=True))
    args = argparse.Namespace(force=False, skip_train=False)
    target = tmp_path / "reacher_action"
    sweep.once(runner, args, target, "train-action-model", "--steps", 5, key={"steps": 5})
    sweep.once(runner, args, target, "train-action-model", "--steps", 5, key={"steps": 5})
    assert len(calls) == 1 and (tmp_path / ".repro_done" / "reacher_action.json").is_file()
    sweep.once(runner, args, target, "train-action-model", "--steps", 9, key={"steps": 9})  # new settings
    assert len(calls) == 2
    sweep.once(runner, argparse.Namespace(force=True, skip_train=False), target, "x", key={"steps": 9})
    assert len(calls) == 3
    target.rmdir()  # deleted by hand: built again
    sweep.once(runner, args, target, "x", key={"steps": 9})
    assert len(calls) == 4
    with pytest.raises(SystemExit, match="never built"):
        sweep.once(runner, argparse.Namespace(force=False, skip_train=True), tmp_path / "other", "x", key=None)

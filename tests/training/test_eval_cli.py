"""`lam-fast eval leakage|transfer` on a briefly trained run: the JSON interface scripts rely on."""

import json

import pytest

from lam_fast.cli import main as cli_main
from lam_fast.training import make_config, train

SMALL = dict(engine="local", preset="tiny", image_size=32, patch_size=8, num_frames=4, fps=4.0, batch_size=2,
             num_workers=0, latent_dim=16, log_every=1)


@pytest.fixture(scope="module")
def run_dir(video_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    train(make_config(**SMALL, reg="sparse", data=str(video_folder), steps=2, save_every=2, out=str(out)))
    return out


@pytest.mark.parametrize("protocol, changed", [("leakage", "error_changed"), ("transfer", "error_transferred")])
def test_eval_command_writes_the_headline_numbers(protocol, changed, run_dir, video_folder, tmp_path, capsys):
    out = tmp_path / f"{protocol}.json"
    assert cli_main(["eval", protocol, "--ckpt", str(run_dir), "--data", str(video_folder), "--json", str(out),
                     "--clips", "4"]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == protocol and result["reg"] == "sparse"
    assert result["ratio"] == pytest.approx(result[changed] / result["error_original"])
    assert len(result["clip_sources"]) == 4 and len(result["per_clip"]["error_original"]) == 4
    assert f"{protocol}: error original" in capsys.readouterr().out


def test_eval_needs_two_clips(run_dir, video_folder, tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["eval", "leakage", "--ckpt", str(run_dir), "--data", str(video_folder),
                  "--json", str(tmp_path / "x.json"), "--clips", "1"])


def test_report_collects_runs_and_their_evals(run_dir, video_folder, tmp_path, capsys):
    for protocol in ("leakage", "transfer"):
        cli_main(["eval", protocol, "--ckpt", str(run_dir), "--data", str(video_folder),
                  "--json", str(run_dir / "eval" / f"{protocol}.json"), "--clips", "4"])
    out = tmp_path / "report.md"
    assert cli_main(["report", str(run_dir), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| leakage |" in text and "| transfer |" in text and "## Training" in text
    printed = capsys.readouterr().out
    assert "leakage ratio" in printed and "transfer ratio" in printed
    with pytest.raises(SystemExit, match="metrics.jsonl"):
        cli_main(["report", str(tmp_path)])

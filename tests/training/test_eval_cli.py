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
    capsys.readouterr()
    assert cli_main(["report", str(tmp_path)]) == 2  # a user error: one line, exit 2
    assert capsys.readouterr().err.startswith(f"lam-fast report: error: {tmp_path} has no metrics.jsonl")


# --- figures and `eval capacity` ------------------------------------------------------------------


def _checkpoint(out, seed=0, **overrides):
    """A checkpoint directory (config.yaml + model.safetensors, what `--ckpt` also accepts) of an
    untrained model with slightly perturbed weights: no training needed."""
    import torch
    from safetensors.torch import save_file

    from lam_fast.models import LatentActionWorldModel
    from lam_fast.models.encoders import build_encoder
    from lam_fast.training.config import save_config

    cfg = make_config(**SMALL, **overrides)
    encoder = build_encoder(cfg.encoder, cfg.image_size, **cfg.encoder_options())
    model = LatentActionWorldModel(cfg.model_config(), state_dim=encoder.dim, grid=encoder.grid)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=g))
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    save_config(cfg, out / "config.yaml")
    (out / "metrics.jsonl").write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n")  # for the report
    return out


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("eval") / "det", reg="deterministic")


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("eval") / "noisy", seed=1, reg="noisy", beta=1e-2)


def _is_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(str(path)).ndim == 3


def test_eval_writes_figures_next_to_the_json(run_dir, video_folder, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "leak.json"
    cli_main(["eval", "leakage", "--ckpt", str(run_dir), "--data", str(video_folder), "--json", str(out), "--clips", "3"])
    result = json.loads(out.read_text())
    assert result["figure"] == str(tmp_path / "leak.png") and _is_png(tmp_path / "leak.png")
    png = tmp_path / "figs" / "t.png"
    cli_main(["eval", "transfer", "--ckpt", str(run_dir), "--data", str(video_folder), "--json", str(out),
              "--clips", "3", "--png", str(png)])
    result = json.loads(out.read_text())
    if result["figure"] is None:  # only without lam_fast.models.decoder: the pixels encoder inverts exactly
        assert "decoder" in result["figure_reason"]
    else:
        assert result["figure"] == str(png) and _is_png(png)
    assert {"error_original", "error_transferred", "ratio"} <= set(result)


def test_transfer_figure_is_skipped_when_states_cannot_be_decoded(run_dir, tmp_path):
    """The real lam_fast.models.decoder: an encoder without an exact inverse and a run without a
    trained decoder give no figure and the reason, not an exception."""
    import torch

    from lam_fast.eval.figures import transfer_figure_from_states

    class NoInverse:  # what a non-pixel encoder looks like to the decoder: a name and no decoder
        name = "effnet"

    states = torch.rand(2, 3, 4, 8)
    png = tmp_path / "transfer.png"
    figure, reason = transfer_figure_from_states(str(run_dir), NoInverse(), states, states[:, 1:], [1, 0],
                                                 ["a.mp4", "b.mp4"], png)
    assert figure is None and "no exact inverse" in reason and "train-decoder" in reason
    assert not png.exists()


def test_eval_capacity_command(run_dir, noisy_run, det_run, video_folder, tmp_path, capsys):
    out = tmp_path / "cap" / "capacity.json"
    assert cli_main(["eval", "capacity", "--ckpt", str(run_dir), str(noisy_run), "--baseline", str(det_run),
                     "--data", str(video_folder), "--json", str(out), "--clips", "3"]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "capacity" and result["clips"] == 3 and "metric" in result
    assert result["baseline"]["run"] == str(det_run) and result["baseline"]["error"] > 0
    runs = result["runs"]
    assert [(r["run"], r["reg"], r["capacity_knob"]) for r in runs] == [
        (str(run_dir), "sparse", "lambda_l1"), (str(noisy_run), "noisy", "beta")]
    assert runs[1]["knob_value"] == pytest.approx(1e-2)
    for r in runs:
        assert r["rel_to_baseline"] == pytest.approx(r["error"] / result["baseline"]["error"])
    assert result["figure"] == str(tmp_path / "cap" / "capacity.png")
    printed = capsys.readouterr().out
    assert "capacity: baseline" in printed and "lambda_l1=" in printed
    # the report picks up the capacity JSON and the figure
    (det_run / "eval").mkdir(exist_ok=True)
    (det_run / "eval" / "capacity.json").write_text(out.read_text())
    (det_run / "eval" / "capacity.png").write_bytes((tmp_path / "cap" / "capacity.png").read_bytes())
    assert cli_main(["report", str(det_run), "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "## Capacity" in text and "lambda_l1" in text and "capacity.png)" in text
    page = (tmp_path / "r.html").read_text()
    assert '<img src="../' in page and 'det/eval/capacity.png"' in page  # relative to the report


def test_eval_capacity_checks_its_runs(run_dir, det_run, video_folder, tmp_path, capsys):
    import shutil

    common = ["--data", str(video_folder), "--json", str(tmp_path / "c.json")]

    def refused(*ckpts, baseline) -> str:  # a user error: exit 2, one line on stderr
        capsys.readouterr()
        assert cli_main(["eval", "capacity", "--ckpt", *map(str, ckpts), "--baseline", str(baseline), *common]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lam-fast eval: error: ") and err.count("\n") == 1, err
        return err

    assert "--reg deterministic" in refused(run_dir, baseline=run_dir)
    assert "deterministic run" in refused(det_run, baseline=det_run)
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    for config in other.glob("checkpoints/step_*/config.yaml"):
        config.write_text(config.read_text().replace("num_frames: 4", "num_frames: 6"))
    assert "num_frames differs" in refused(run_dir, other, baseline=det_run)
    with pytest.raises(SystemExit):  # --baseline is required
        cli_main(["eval", "capacity", "--ckpt", str(run_dir), *common])
    with pytest.raises(SystemExit):  # leakage takes one run
        cli_main(["eval", "leakage", "--ckpt", str(run_dir), str(run_dir), *common])

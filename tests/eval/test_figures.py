"""The evaluation figures are valid PNG files that matplotlib reads back."""

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from lam_fast.eval.figures import capacity_figure, figure_or_reason, leakage_figure, transfer_figure  # noqa: E402
from lam_fast.eval.results import CapacityResult, LeakageResult  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    return image


def test_capacity_figure(tmp_path, old_files):
    data = old_files["capacity.json"]
    run = data["runs"][0]
    data["runs"] = [
        {**run, "run": "a", "knob_value": 0.2, "error": 0.25, "rel_to_baseline": 0.83},
        {**run, "run": "b", "knob_value": 0.02, "error": 0.2, "rel_to_baseline": 0.67},
        {**run, "run": "c", "reg": "noisy", "capacity_knob": "beta", "knob_value": 1e-4, "error": 0.21,
         "rel_to_baseline": 0.7},
        {**run, "run": "d", "reg": "discrete", "capacity_knob": "codebook_size", "knob_value": 8, "error": 0.29,
         "rel_to_baseline": 0.97},
        {**run, "run": "d", "reg": "discrete", "capacity_knob": "codebook_size", "knob_value": 256, "error": 0.28,
         "rel_to_baseline": 0.93},
        data["runs"][1],  # no knob: a dashed line
    ]
    path = capacity_figure(CapacityResult.from_dict(data), tmp_path / "sub" / "capacity.png")
    assert path == tmp_path / "sub" / "capacity.png"
    _check_png(path)
    _check_png(capacity_figure(CapacityResult.from_dict({**data, "runs": []}), tmp_path / "empty.png"))


def test_leakage_figure(tmp_path, old_files):
    data = {**old_files["leakage.json"], "cut": 3,
            "per_clip": {"error_original": [0.1, 0.2, 0.3], "error_changed": [0.4, 0.5, 0.6]}}
    _check_png(leakage_figure(LeakageResult.from_dict(data), tmp_path / "leakage.png"))


def test_a_figure_that_fails_costs_only_the_figure(tmp_path):
    def broken(path):
        raise RuntimeError("no display")

    assert figure_or_reason(broken, tmp_path / "x.png") == (None, "figure failed: RuntimeError: no display")
    assert figure_or_reason(lambda path: path, tmp_path / "x.png") == (str(tmp_path / "x.png"), None)


def test_transfer_figure_takes_uint8_arrays_and_float_tensors(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
    target = torch.rand(4, 3, 16, 16)
    transferred = torch.rand(3, 3, 16, 16) * 1.5 - 0.2  # shorter and out of range: clipped, blank cell
    _check_png(transfer_figure(source, target, transferred, tmp_path / "transfer.png", titles=("A", "B", "B <- A")))
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        transfer_figure(source[:, :2], target, transferred, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="titles"):
        transfer_figure(source, target, transferred, tmp_path / "bad.png", titles=("A", "B"))

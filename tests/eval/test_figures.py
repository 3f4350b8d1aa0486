"""The evaluation figures are valid PNG files that matplotlib reads back."""

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from lam_fast.eval.figures import capacity_figure, leakage_figure, transfer_figure  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    return image


def test_capacity_figure(tmp_path):
    result = {
        "protocol": "capacity", "clips": 4, "metric": "mean L1",
        "baseline": {"run": "runs/det", "error": 0.30},
        "runs": [
            {"run": "a", "reg": "sparse", "capacity_knob": "lambda_l1", "knob_value": 0.2, "error": 0.25, "rel_to_baseline": 0.83},
            {"run": "b", "reg": "sparse", "capacity_knob": "lambda_l1", "knob_value": 0.02, "error": 0.2, "rel_to_baseline": 0.67},
            {"run": "c", "reg": "noisy", "capacity_knob": "beta", "knob_value": 1e-4, "error": 0.21, "rel_to_baseline": 0.7},
            {"run": "d", "reg": "discrete", "capacity_knob": "codebook_size", "knob_value": 8, "error": 0.29,
             "rel_to_baseline": 0.97},
            {"run": "d", "reg": "discrete", "capacity_knob": "codebook_size", "knob_value": 256, "error": 0.28,
             "rel_to_baseline": 0.93},
            {"run": "e", "reg": "none", "capacity_knob": None, "knob_value": None, "error": 0.1, "rel_to_baseline": 0.33},
        ],
    }
    path = capacity_figure(result, tmp_path / "sub" / "capacity.png")
    assert path == tmp_path / "sub" / "capacity.png"
    _check_png(path)
    _check_png(capacity_figure({"baseline": {"error": 0.3}, "runs": []}, tmp_path / "empty.png"))


def test_leakage_figure(tmp_path):
    result = {"error_original": 0.2, "error_changed": 0.5, "ratio": 2.5, "cut": 3, "reg": "sparse",
              "per_clip": {"error_original": [0.1, 0.2, 0.3], "error_changed": [0.4, 0.5, 0.6]}}
    _check_png(leakage_figure(result, tmp_path / "leakage.png"))


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

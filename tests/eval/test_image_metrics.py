"""PSNR / SSIM / L1 on known cases, the SSIM window for tiny images, and LPIPS availability."""

import math

import pytest
import torch

from lam_fast.eval.image_metrics import l1, lpips_available, lpips_distance, psnr, ssim, ssim_window


def _images(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_identical_images():
    x = _images(2, 3, 3, 16, 16)
    assert psnr(x, x) == math.inf  # defined as +inf, not capped
    assert ssim(x, x) == pytest.approx(1.0)
    assert l1(x, x) == 0.0


def test_psnr_of_a_constant_offset():
    x = _images(4, 3, 12, 12) * 0.8
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01, range 1
    assert psnr(x + 0.01, x) == pytest.approx(40.0, abs=1e-3)
    assert l1(x + 0.1, x) == pytest.approx(0.1, abs=1e-6)


def test_psnr_averages_per_image_values():
    x = _images(2, 3, 8, 8) * 0.8
    y = x.clone()
    y[0] += 0.1
    y[1] += 0.01
    assert psnr(y, x) == pytest.approx(30.0, abs=1e-3)  # mean of 20 and 40 dB, not the PSNR of the mean MSE


def test_ssim_orders_degradations_and_handles_tiny_images():
    x = _images(3, 3, 16, 16)
    mild = (x + 0.05 * _images(3, 3, 16, 16, seed=1)).clamp(0, 1)
    strong = _images(3, 3, 16, 16, seed=2)
    assert 1.0 > ssim(mild, x) > ssim(strong, x)
    assert [ssim_window(s, s) for s in (3, 4, 5, 6, 7, 8, 64)] == [3, 3, 5, 5, 7, 7, 7]
    assert ssim_window(5, 64) == 5
    tiny = _images(2, 3, 4, 4)
    assert ssim(tiny, tiny) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3x3"):
        ssim(_images(3, 2, 2), _images(3, 2, 2))


def test_shape_checks():
    with pytest.raises(ValueError, match="share a shape"):
        psnr(_images(3, 8, 8), _images(3, 8, 9))
    with pytest.raises(ValueError, match="share a shape"):
        ssim(_images(1, 8, 8), _images(1, 8, 8))


def test_lpips_unavailable_here_says_why():
    ok, reason = lpips_available()
    if ok:
        pytest.skip("LPIPS and its weights are installed here")
    assert isinstance(reason, str) and reason
    with pytest.raises(RuntimeError, match="LPIPS unavailable"):
        lpips_distance(_images(1, 3, 8, 8), _images(1, 3, 8, 8))

"""Image quality of decoded frames: PSNR, SSIM (scikit-image) and LPIPS where it can run offline.

Inputs are float tensors (..., 3, H, W) in [0, 1] (data range 1.0); every leading index is one
image, each metric is computed per image and averaged over the images.

- :func:`psnr`: ``skimage.metrics.peak_signal_noise_ratio``. Identical images have an infinite
  PSNR and it is reported as ``inf`` (no cap), so the mean is ``inf`` as soon as one pair is
  identical; callers that write JSON should map it (``lam-fast train-decoder`` writes null).
- :func:`ssim`: ``skimage.metrics.structural_similarity`` over the colour channels, 7x7 uniform
  window, shrunk to the largest odd size that fits images smaller than 7 pixels (min side >= 3).
- :func:`lpips_distance`: the ``lpips`` package (AlexNet), only when :func:`lpips_available`: the
  package is installed and both its linear-layer weights and the torchvision AlexNet weights are
  already on disk (nothing is downloaded).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["l1", "lpips_available", "lpips_distance", "psnr", "ssim", "ssim_window"]


def _images(name: str, pred: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3, H, W) pair -> two float64 arrays (M, H, W, 3)."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: pred and target must be torch tensors")
    if pred.shape != target.shape or pred.dim() < 3 or pred.shape[-3] != 3:
        raise ValueError(f"{name}: pred and target must share a shape (..., 3, H, W), "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    def convert(x):
        return x.detach().to("cpu", torch.float64).reshape(-1, *x.shape[-3:]).permute(0, 2, 3, 1).numpy()
    return convert(pred), convert(target)


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute pixel error."""
    _images("l1", pred, target)
    return (pred.float() - target.float()).abs().mean().item()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of the PSNR in dB (data range 1); ``inf`` for identical images."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _images("psnr", pred, target)
    values = []
    for x, y in zip(a, b):
        if np.array_equal(x, y):  # skimage divides by zero here (and warns); the limit is +inf
            values.append(math.inf)
        else:
            values.append(float(peak_signal_noise_ratio(y, x, data_range=1.0)))
    return float(np.mean(values))


def ssim_window(height: int, width: int) -> int:
    """SSIM window side: 7, or the largest odd size <= the smaller image side (which must be >= 3)."""
    side = min(height, width)
    if side < 3:
        raise ValueError(f"ssim needs images of at least 3x3 pixels, got {height}x{width}")
    return min(7, side if side % 2 else side - 1)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of the structural similarity (data range 1, colour channels averaged)."""
    from skimage.metrics import structural_similarity

    a, b = _images("ssim", pred, target)
    win = ssim_window(a.shape[1], a.shape[2])
    values = [structural_similarity(y, x, data_range=1.0, channel_axis=-1, win_size=win) for x, y in zip(a, b)]
    return float(np.mean(values))


def _alexnet_weights_path() -> Path | None:
    try:
        from torchvision.models import AlexNet_Weights
    except ImportError:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(AlexNet_Weights.IMAGENET1K_V1.url)


def lpips_available() -> tuple[bool, str]:
    """(True, "") when LPIPS can run here without a download, else (False, why not)."""
    try:
        import lpips
    except ImportError as error:
        return False, f"the lpips package is not installed ({error})"
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    if not linear.is_file():
        return False, f"lpips linear-layer weights missing: {linear}"
    backbone = _alexnet_weights_path()
    if backbone is None:
        return False, "torchvision is not installed (lpips needs its AlexNet)"
    if not backbone.is_file():
        return False, f"torchvision AlexNet weights are not cached at {backbone} (cannot download here)"
    return True, ""


_LPIPS_MODELS: dict[str, torch.nn.Module] = {}


def lpips_distance(pred: torch.Tensor, target: torch.Tensor, *, batch_size: int = 32) -> float:
    """Mean over images of LPIPS (AlexNet, v0.1); RuntimeError with the reason if unavailable."""
    ok, reason = lpips_available()
    if not ok:
        raise RuntimeError(f"LPIPS unavailable: {reason}")
    import lpips

    _images("lpips", pred, target)
    device = pred.device
    key = str(device)
    if key not in _LPIPS_MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _LPIPS_MODELS[key] = lpips.LPIPS(net="alex", version="0.1", verbose=False).to(device).eval()
    model = _LPIPS_MODELS[key]
    x = pred.reshape(-1, *pred.shape[-3:]).float()
    y = target.reshape(-1, *target.shape[-3:]).float().to(device)
    values = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            values.append(model(x[i:i + batch_size] * 2 - 1, y[i:i + batch_size] * 2 - 1).flatten())
    return torch.cat(values).mean().item()

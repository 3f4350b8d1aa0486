"""Public frame-wise AdaLN-zero ops: modulation and gated residual."""

from __future__ import annotations

import torch

from lam_fast.ops._dispatch import KERNEL_DTYPES, define_op
from lam_fast.ops._triton import TRITON_DEVICES

MODULATE = define_op("adaln_modulate", auto_order={"cpu": ("cpp", "reference"), "cuda": ("cuda", "triton", "reference")})
GATED = define_op("gated_residual", auto_order={"cpu": ("cpp", "reference"), "cuda": ("cuda", "triton", "reference")})


def _load_modulate_reference():
    from lam_fast.ops.adaln.reference import adaln_modulate_reference

    return adaln_modulate_reference


def _load_gated_reference():
    from lam_fast.ops.adaln.reference import gated_residual_reference

    return gated_residual_reference


MODULATE.register("reference", ("cpu", "cuda"), _load_modulate_reference)
GATED.register("reference", ("cpu", "cuda"), _load_gated_reference)


def _load_modulate_cpp():
    from lam_fast.ops.adaln.cpp import adaln_modulate_cpp

    return adaln_modulate_cpp


def _load_gated_cpp():
    from lam_fast.ops.adaln.cpp import gated_residual_cpp

    return gated_residual_cpp


def _load_modulate_cuda():
    from lam_fast.ops.adaln.cuda import adaln_modulate_cuda

    return adaln_modulate_cuda


def _load_gated_cuda():
    from lam_fast.ops.adaln.cuda import gated_residual_cuda

    return gated_residual_cuda


def _load_modulate_triton():
    from lam_fast.ops.adaln.triton import adaln_modulate_triton

    return adaln_modulate_triton


def _load_gated_triton():
    from lam_fast.ops.adaln.triton import gated_residual_triton

    return gated_residual_triton


MODULATE.register("cpp", ("cpu",), _load_modulate_cpp, KERNEL_DTYPES)
GATED.register("cpp", ("cpu",), _load_gated_cpp, KERNEL_DTYPES)
MODULATE.register("cuda", ("cuda",), _load_modulate_cuda, KERNEL_DTYPES)
GATED.register("cuda", ("cuda",), _load_gated_cuda, KERNEL_DTYPES)
MODULATE.register("triton", TRITON_DEVICES, _load_modulate_triton, KERNEL_DTYPES)
GATED.register("triton", TRITON_DEVICES, _load_gated_triton, KERNEL_DTYPES)


def _check_frames(name: str, x: torch.Tensor, frame_tokens: int, per_frame: dict[str, torch.Tensor]) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name}: x must be (B, T*N, C), got {tuple(x.shape)}")
    if not isinstance(frame_tokens, int) or frame_tokens < 1 or x.shape[1] % frame_tokens:
        raise ValueError(f"{name}: frame_tokens={frame_tokens!r} must be a positive int dividing T*N={x.shape[1]}")
    expected = (x.shape[0], x.shape[1] // frame_tokens, x.shape[2])
    for arg, t in per_frame.items():
        if tuple(t.shape) != expected:
            raise ValueError(f"{name}: {arg} must be (B, T, C) = {expected}, got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name}: {arg} has dtype {t.dtype}, x has {x.dtype}")


def adaln_modulate(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    *,
    frame_tokens: int,
    eps: float = 1e-6,
    backend: str = "auto",
) -> torch.Tensor:
    """``LayerNorm_noaffine(x) * (1 + scale_t) + shift_t`` with frame t's modulation on its N tokens.

    x: (B, T*N, C); shift, scale: (B, T, C); returns (B, T*N, C).
    """
    _check_frames("adaln_modulate", x, frame_tokens, {"shift": shift, "scale": scale})
    _, impl = MODULATE.select(backend, x.device, x.dtype)
    return impl(x, shift, scale, frame_tokens=frame_tokens, eps=float(eps))


def gated_residual(
    x: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    *,
    frame_tokens: int,
    backend: str = "auto",
) -> torch.Tensor:
    """``x + gate_t * y`` with frame t's gate on its N tokens. x, y: (B, T*N, C); gate: (B, T, C)."""
    _check_frames("gated_residual", x, frame_tokens, {"gate": gate})
    if y.shape != x.shape or y.dtype != x.dtype:
        raise ValueError(f"gated_residual: y must match x {tuple(x.shape)} {x.dtype}, got {tuple(y.shape)} {y.dtype}")
    _, impl = GATED.select(backend, x.device, x.dtype)
    return impl(x, y, gate, frame_tokens=frame_tokens)

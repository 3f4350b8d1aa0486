"""Triton kernels for frame-wise AdaLN-zero: modulated LayerNorm and the gated residual.

Shapes: x, y, grad_out: (B, L, C) with L = T * N tokens, N per frame; the per-frame tensors shift,
scale, gate: (B, T, C). Flattening (B, L) to rows r = b * L + l, the frame of row r is r // N, the
row of the per-frame tensors flattened to (B * T, C): the kernels index shift/scale/gate there and
never materialise the (B, L, C) broadcast.

Layouts: token-sized inputs (x, y, grad_out) are read through their (B, L, C) strides, so transposed
or sliced views cost no copy; the per-frame tensors are made contiguous (N times smaller than x).
Outputs are contiguous. All math is fp32 whatever the storage dtype (fp32 / bf16 / fp16); each
output is rounded once.

Per-frame gradients (grad_shift, grad_scale, grad_gate) are reductions over the frame's N tokens.
They are deterministic: program (frame f, split s) sums its rows in a fixed order into an fp32
partial of shape (C,), and the launcher sums a frame's partials over the split axis (torch.sum, a
fixed order). No atomics.

Launch counts per kernel name are in ``LAUNCHES`` (tests prove the backend ran these kernels).
"""

from __future__ import annotations

from collections import Counter

import torch
import triton
import triton.language as tl

#: Launches per kernel name since import.
LAUNCHES: Counter[str] = Counter()

# A program holds BLOCK_R rows x BLOCK_C channels (BLOCK_C = next power of two >= C); BLOCK_R shrinks
# as C grows so a tile stays around _TILE elements (registers), and never exceeds _MAX_ROWS.
_TILE = 2048
_MAX_ROWS = 16
# Backward programs walk about this many rows of one frame each: fewer rows would multiply the fp32
# partials (2 x (C,) per program, written and read again), more would leave GPU SMs idle.
_ROWS_PER_PROGRAM = 64


def _blocks(c: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_C, num_warps) for rows of C channels."""
    block_c = triton.next_power_of_2(max(c, 1))
    block_r = max(1, min(_MAX_ROWS, _TILE // block_c))
    tile = block_r * block_c
    return block_r, block_c, 4 if tile <= 2048 else 8 if tile <= 8192 else 16


def _frame_split(frame_tokens: int, block_r: int) -> tuple[int, int]:
    """(chunks of BLOCK_R rows per program, programs per frame) for the backward kernels."""
    chunks = triton.cdiv(frame_tokens, block_r)
    per_program = min(chunks, max(1, _ROWS_PER_PROGRAM // block_r))
    return per_program, triton.cdiv(chunks, per_program)


@triton.jit
def _rows(r, length, s_b, s_l):
    """Element offset of row r of a (B, L, C) tensor with batch / token strides s_b, s_l (int64)."""
    r = r.to(tl.int64)
    return (r // length) * s_b + (r % length) * s_l


@triton.jit
def _modulate_fwd_kernel(
    x_ptr, shift_ptr, scale_ptr, out_ptr, mean_ptr, rstd_ptr,
    rows, length, frame_tokens, C, eps,
    sx_b, sx_l, sx_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    row_ok = r < rows
    mask = row_ok[:, None] & (cols < C)[None, :]
    x = tl.load(x_ptr + _rows(r, length, sx_b, sx_l)[:, None] + cols[None, :] * sx_c, mask=mask, other=0.0)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=1) / C
    centred = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt_rn(tl.sum(centred * centred, axis=1) / C + eps)
    frame = (r // frame_tokens).to(tl.int64) * C
    per_frame = frame[:, None] + cols[None, :]
    shift = tl.load(shift_ptr + per_frame, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + per_frame, mask=mask, other=0.0).to(tl.float32)
    out = centred * rstd[:, None] * (1.0 + scale) + shift
    tl.store(out_ptr + r.to(tl.int64)[:, None] * C + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + r, mean, mask=row_ok)
    tl.store(rstd_ptr + r, rstd, mask=row_ok)


@triton.jit
def _modulate_bwd_kernel(
    grad_out_ptr, x_ptr, scale_ptr, mean_ptr, rstd_ptr, grad_x_ptr, part_shift_ptr, part_scale_ptr,
    frames, length, frame_tokens, C, chunks,
    sg_b, sg_l, sg_c, sx_b, sx_l, sx_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Program (frame f, split s): rows [s * chunks * BLOCK_R, ...) of frame f, BLOCK_R at a time."""
    f = tl.program_id(0)
    split = tl.program_id(1)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    one_plus_scale = 1.0 + tl.load(scale_ptr + f.to(tl.int64) * C + cols, mask=col_ok, other=0.0).to(tl.float32)
    acc_shift = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    acc_scale = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for i in range(chunks):
        token = (split * chunks + i) * BLOCK_R + tl.arange(0, BLOCK_R)
        r = f * frame_tokens + token
        row_ok = token < frame_tokens
        mask = row_ok[:, None] & col_ok[None, :]
        go = tl.load(
            grad_out_ptr + _rows(r, length, sg_b, sg_l)[:, None] + cols[None, :] * sg_c, mask=mask, other=0.0
        ).to(tl.float32)
        x = tl.load(x_ptr + _rows(r, length, sx_b, sx_l)[:, None] + cols[None, :] * sx_c, mask=mask, other=0.0)
        mean = tl.load(mean_ptr + r, mask=row_ok, other=0.0)
        rstd = tl.load(rstd_ptr + r, mask=row_ok, other=0.0)
        x_hat = tl.where(mask, (x.to(tl.float32) - mean[:, None]) * rstd[:, None], 0.0)
        # LayerNorm backward of g = d out / d x_hat: rstd * (g - mean(g) - x_hat * mean(g * x_hat))
        g = go * one_plus_scale[None, :]
        mean_g = tl.sum(g, axis=1) / C
        mean_gx = tl.sum(g * x_hat, axis=1) / C
        grad_x = (g - mean_g[:, None] - x_hat * mean_gx[:, None]) * rstd[:, None]
        tl.store(
            grad_x_ptr + r.to(tl.int64)[:, None] * C + cols[None, :], grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask
        )
        acc_shift += go
        acc_scale += go * x_hat
    part = (split * frames + f).to(tl.int64) * C + cols
    tl.store(part_shift_ptr + part, tl.sum(acc_shift, axis=0), mask=col_ok)
    tl.store(part_scale_ptr + part, tl.sum(acc_scale, axis=0), mask=col_ok)


@triton.jit
def _gated_fwd_kernel(
    x_ptr, y_ptr, gate_ptr, out_ptr,
    rows, length, frame_tokens, C,
    sx_b, sx_l, sx_c, sy_b, sy_l, sy_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    mask = (r < rows)[:, None] & (cols < C)[None, :]
    x = tl.load(x_ptr + _rows(r, length, sx_b, sx_l)[:, None] + cols[None, :] * sx_c, mask=mask, other=0.0)
    y = tl.load(y_ptr + _rows(r, length, sy_b, sy_l)[:, None] + cols[None, :] * sy_c, mask=mask, other=0.0)
    frame = (r // frame_tokens).to(tl.int64) * C
    gate = tl.load(gate_ptr + frame[:, None] + cols[None, :], mask=mask, other=0.0)
    # fp32 then one rounding: with gate == 0 the result is x bit for bit (AdaLN-zero at init)
    out = x.to(tl.float32) + gate.to(tl.float32) * y.to(tl.float32)
    tl.store(out_ptr + r.to(tl.int64)[:, None] * C + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gated_bwd_kernel(
    grad_out_ptr, y_ptr, gate_ptr, grad_y_ptr, part_gate_ptr,
    frames, length, frame_tokens, C, chunks,
    sg_b, sg_l, sg_c, sy_b, sy_l, sy_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Program (frame f, split s): grad_y of its rows and the fp32 partial of grad_gate[f]."""
    f = tl.program_id(0)
    split = tl.program_id(1)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    gate = tl.load(gate_ptr + f.to(tl.int64) * C + cols, mask=col_ok, other=0.0).to(tl.float32)
    acc_gate = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for i in range(chunks):
        token = (split * chunks + i) * BLOCK_R + tl.arange(0, BLOCK_R)
        r = f * frame_tokens + token
        mask = (token < frame_tokens)[:, None] & col_ok[None, :]
        go = tl.load(
            grad_out_ptr + _rows(r, length, sg_b, sg_l)[:, None] + cols[None, :] * sg_c, mask=mask, other=0.0
        ).to(tl.float32)
        y = tl.load(y_ptr + _rows(r, length, sy_b, sy_l)[:, None] + cols[None, :] * sy_c, mask=mask, other=0.0)
        grad_y = go * gate[None, :]
        tl.store(
            grad_y_ptr + r.to(tl.int64)[:, None] * C + cols[None, :], grad_y.to(grad_y_ptr.dtype.element_ty), mask=mask
        )
        acc_gate += go * y.to(tl.float32)
    part = (split * frames + f).to(tl.int64) * C + cols
    tl.store(part_gate_ptr + part, tl.sum(acc_gate, axis=0), mask=col_ok)


def _per_frame_sum(partials: torch.Tensor, dtype: torch.dtype, shape: torch.Size) -> torch.Tensor:
    """(splits, B * T, C) fp32 partials -> (B, T, C) in dtype: a deterministic sum, one rounding."""
    total = partials[0] if partials.shape[0] == 1 else partials.sum(0)
    return total.to(dtype).view(shape)


def modulate_fwd(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frame_tokens: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: (B, L, C), shift/scale: (B, T, C) -> out (B, L, C) contiguous, mean and rstd (B, L) fp32."""
    b, length, c = x.shape
    out = torch.empty((b, length, c), dtype=x.dtype, device=x.device)
    mean = torch.empty((b, length), dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    rows = b * length
    if rows == 0 or c == 0:  # nothing to normalise; the statistics are never read
        return out, mean.zero_(), rstd.zero_()
    block_r, block_c, warps = _blocks(c)
    LAUNCHES["modulate_fwd"] += 1
    _modulate_fwd_kernel[(triton.cdiv(rows, block_r),)](
        x, shift.contiguous(), scale.contiguous(), out, mean, rstd,
        rows, length, frame_tokens, c, eps,
        *x.stride(),
        BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )  # fmt: skip
    return out, mean, rstd


def modulate_bwd(
    grad_out: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
    frame_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """grad_out, x: (B, L, C), scale: (B, T, C), mean/rstd: (B, L) fp32 from ``modulate_fwd``
    -> grad_x (B, L, C), grad_shift and grad_scale (B, T, C), all in x's dtype."""
    b, length, c = x.shape
    frames = b * (length // frame_tokens)
    grad_x = torch.empty((b, length, c), dtype=x.dtype, device=x.device)
    if frames == 0 or c == 0:
        return grad_x, torch.zeros_like(scale), torch.zeros_like(scale)
    block_r, block_c, warps = _blocks(c)
    chunks, splits = _frame_split(frame_tokens, block_r)
    part_shift = torch.empty((splits, frames, c), dtype=torch.float32, device=x.device)
    part_scale = torch.empty_like(part_shift)
    LAUNCHES["modulate_bwd"] += 1
    _modulate_bwd_kernel[(frames, splits)](
        grad_out, x, scale.contiguous(), mean, rstd, grad_x, part_shift, part_scale,
        frames, length, frame_tokens, c, chunks,
        *grad_out.stride(), *x.stride(),
        BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )  # fmt: skip
    return grad_x, _per_frame_sum(part_shift, x.dtype, scale.shape), _per_frame_sum(part_scale, x.dtype, scale.shape)


def gated_fwd(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, frame_tokens: int) -> torch.Tensor:
    """x, y: (B, L, C), gate: (B, T, C) -> x + gate_t * y: (B, L, C) contiguous."""
    b, length, c = x.shape
    out = torch.empty((b, length, c), dtype=x.dtype, device=x.device)
    rows = b * length
    if rows == 0 or c == 0:
        return out
    block_r, block_c, warps = _blocks(c)
    LAUNCHES["gated_fwd"] += 1
    _gated_fwd_kernel[(triton.cdiv(rows, block_r),)](
        x, y, gate.contiguous(), out,
        rows, length, frame_tokens, c,
        *x.stride(), *y.stride(),
        BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )  # fmt: skip
    return out


def gated_bwd(
    grad_out: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, frame_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_out, y: (B, L, C), gate: (B, T, C) -> grad_y = gate_t * grad_out (B, L, C) and
    grad_gate = per-frame sum of grad_out * y (B, T, C). (grad_x is grad_out itself.)"""
    b, length, c = y.shape
    frames = b * (length // frame_tokens)
    grad_y = torch.empty((b, length, c), dtype=y.dtype, device=y.device)
    if frames == 0 or c == 0:
        return grad_y, torch.zeros_like(gate)
    block_r, block_c, warps = _blocks(c)
    chunks, splits = _frame_split(frame_tokens, block_r)
    part_gate = torch.empty((splits, frames, c), dtype=torch.float32, device=y.device)
    LAUNCHES["gated_bwd"] += 1
    _gated_bwd_kernel[(frames, splits)](
        grad_out, y, gate.contiguous(), grad_y, part_gate,
        frames, length, frame_tokens, c, chunks,
        *grad_out.stride(), *y.stride(),
        BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
    )  # fmt: skip
    return grad_y, _per_frame_sum(part_gate, y.dtype, gate.shape)

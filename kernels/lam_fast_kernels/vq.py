"""Triton kernel for the VQ codebook lookup: nearest code, gather and squared errors in one pass.

``vq_fused(x: (M, D), codebook: (K, D))`` runs one program per BLOCK_M rows. The program streams the
codebook in BLOCK_K-code blocks, forms e_k = |c_k|^2 - 2 x.c_k with ``tl.dot`` (fp32 accumulation;
|x|^2 is common to the row and left out), and keeps a running minimum (ties to the lowest index)
and the runner-up value; the M x K matrix never exists. It then gathers the chosen code into
``codes`` and writes the row's fp32 squared error |x - c|^2, so the losses need no second pass.

Exactness (the same argument as csrc/vq.cpp): every e_k is within b of its exact value, with b a
rigorous forward-error bound built from |x|, max|c| and max|c|^2 (Higham's gamma_D for the dot
product, with twice the fp32 unit roundoff so tensor-core accumulation that truncates is covered,
plus the roundings of |c|^2 and of the subtraction, plus flushed denormals). The reference compares
float64 distances, themselves within delta of exact. A row whose runner-up exceeds its best by more
than 2b + 2 delta has a unique float64 minimum, at the kernel's best code: the reference's answer.
Every other row -- a near tie, an exact tie, a non-finite value, |x|^2 or |c|^2 above 1e30 where
fp32 could overflow, D above 2^15 where the bound is not claimed -- is flagged ``uncertain``; the
caller recomputes those rows in float64 and overwrites their outputs.

|c|^2 is computed once per call in float64 (torch, K x D) and rounded to fp32 for the kernel.
Layouts: x and codebook are read through their strides (no copies); ``codes`` is contiguous.
Launch counts per kernel name are in ``LAUNCHES``.
"""

from __future__ import annotations

from collections import Counter

import torch
import triton
import triton.language as tl

#: Launches per kernel name since import.
LAUNCHES: Counter[str] = Counter()

_BLOCK_M = 64
_BLOCK_K = 64
_MAX_BLOCK_D = 64
# Above this |v|^2 an fp32 dot product could overflow: such rows are left to the float64 recheck.
_FAST_NORM_SQ_MAX = 1e30
_U32 = 2.0**-24  # fp32 unit roundoff
_U64 = 2.0**-53
_SAFETY = 1.0625  # covers the fp32 evaluation of the bound itself and (1 + gamma)^k factors for D <= 2^15
_MAX_BOUND_D = 2**15


@triton.jit
def _vq_kernel(
    x_ptr, cb_ptr, cc_ptr, cmax_ptr, codes_ptr, idx_ptr, sqerr_ptr, uncertain_ptr,
    M, K, D,
    sx_m, sx_d, sc_k, sc_d,
    slack_cc, slack_xc, slack_64, slack_abs, norm_sq_max,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * sx_m
    dd = tl.arange(0, BLOCK_D)

    xx = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        mask = row_ok[:, None] & (d0 + dd < D)[None, :]
        x = tl.load(x_rows + (d0 + dd)[None, :] * sx_d, mask=mask, other=0.0).to(tl.float32)
        xx += tl.sum(x * x, axis=1)

    best = tl.full((BLOCK_M,), float("inf"), tl.float32)
    second = tl.full((BLOCK_M,), float("inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_M,), dtype=tl.int32)
    lanes = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + lanes
        k_ok = ks < K
        c_rows = cb_ptr + ks.to(tl.int64)[:, None] * sc_k
        dot = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d_ok = (d0 + dd < D)[None, :]
            x = tl.load(x_rows + (d0 + dd)[None, :] * sx_d, mask=row_ok[:, None] & d_ok, other=0.0)
            c = tl.load(c_rows + (d0 + dd)[None, :] * sc_d, mask=k_ok[:, None] & d_ok, other=0.0)
            if DOT_FP32:
                x = x.to(tl.float32)
                c = c.to(tl.float32)
            # 16-bit products are exact in fp32; fp32 inputs must not be rounded to tf32
            dot = tl.dot(x, tl.trans(c), dot, input_precision="ieee")
        cc = tl.load(cc_ptr + ks, mask=k_ok, other=float("inf"))
        # padding codes lose every comparison, even against a NaN row
        e = tl.where(k_ok[None, :], cc[None, :] - 2.0 * dot, float("inf"))
        block_best, block_arg = tl.min(e, axis=1, return_indices=True, return_indices_tie_break_left=True)
        block_second = tl.min(tl.where(lanes[None, :] == block_arg[:, None], float("inf"), e), axis=1)
        # strict <: an equal value in a later block keeps the earlier index (and sets second = best)
        better = block_best < best
        second = tl.where(better, tl.minimum(best, block_second), tl.minimum(second, block_best))
        best_idx = tl.where(better, k0 + block_arg, best_idx)
        best = tl.where(better, block_best, best)

    cc_max = tl.load(cmax_ptr)
    c_norm_max = tl.load(cmax_ptr + 1)
    xc = tl.sqrt(xx) * c_norm_max
    slack = slack_cc * cc_max + slack_xc * xc + slack_64 * (xx + 2.0 * xc + cc_max) + slack_abs
    # A NaN or inf in x or the codebook makes the slack NaN or inf: the gap test fails, the row is uncertain
    certain = (tl.maximum(xx, cc_max) <= norm_sq_max) & (second - best > slack)

    c_rows = cb_ptr + best_idx.to(tl.int64)[:, None] * sc_k
    out_rows = codes_ptr + rows.to(tl.int64)[:, None] * D
    sq = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        mask = row_ok[:, None] & (d0 + dd < D)[None, :]
        c = tl.load(c_rows + (d0 + dd)[None, :] * sc_d, mask=mask, other=0.0)
        tl.store(out_rows + (d0 + dd)[None, :], c, mask=mask)
        x = tl.load(x_rows + (d0 + dd)[None, :] * sx_d, mask=mask, other=0.0)
        diff = x.to(tl.float32) - c.to(tl.float32)
        sq += tl.sum(diff * diff, axis=1)
    tl.store(idx_ptr + rows, best_idx.to(tl.int64), mask=row_ok)
    tl.store(sqerr_ptr + rows, sq, mask=row_ok)
    tl.store(uncertain_ptr + rows, (~certain).to(tl.int8), mask=row_ok)


def _slack_coefficients(d: int) -> tuple[float, float, float, float]:
    """(s_cc, s_xc, s_64, s_abs) with slack = s_cc max|c|^2 + s_xc |x| max|c| + s_64 (|x|^2 + 2 |x|
    max|c| + max|c|^2) + s_abs >= 2 b + 2 delta (see the module docstring); inf when D > 2^15."""
    if d > _MAX_BOUND_D:
        return (float("inf"),) * 4
    gamma = d * 2 * _U32 / (1 - d * 2 * _U32)  # dot product, accumulation may truncate
    # b: |c|^2 rounded from float64 (+ its own error) and the subtraction: <= 4u |c|^2 + 2u (2 |x||c|)
    # on top of 2 gamma |x||c| from the dot; |x| is estimated from the fp32 |x|^2 (factor (1+gamma)^2)
    s_cc = 2 * 4 * _U32
    s_xc = 2 * (2 * gamma + 2 * _U32) * (1 + gamma) ** 2
    s_64 = 2 * 2 * (d + 4) * _U64  # float64 |x|^2 - 2 x.c + |c|^2, twice for margin
    s_abs = 4 * (2 * d + 4) * 2.0**-126  # 2 b: each op of 2 x.c may flush a denormal
    return tuple(_SAFETY * s for s in (s_cc, s_xc, s_64, s_abs))


def vq_fused(
    x: torch.Tensor, codebook: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: (M, D), codebook: (K, D), same dtype (fp32 / bf16 / fp16), K >= 1.

    Returns codes (M, D) contiguous in x's dtype, indices (M,) int64, sqerr (M,) fp32 = |x - code|^2,
    uncertain (M,) bool: rows whose outputs the caller must recompute in float64.
    """
    m, d = x.shape
    k = codebook.shape[0]
    codes = torch.empty((m, d), dtype=x.dtype, device=x.device)
    indices = torch.empty(m, dtype=torch.int64, device=x.device)
    sqerr = torch.empty(m, dtype=torch.float32, device=x.device)
    uncertain = torch.empty(m, dtype=torch.int8, device=x.device)
    if m == 0:
        return codes, indices, sqerr, uncertain.bool()
    cc = codebook.detach().double().square().sum(1)
    # max|c|^2 and max|c| rounded up past their fp32 rounding (a NaN code makes them NaN)
    cc_max = cc.max()
    cmax = (torch.stack([cc_max, cc_max.sqrt()]) * (1 + 2.0**-20)).float()
    block_m = max(16, min(_BLOCK_M, triton.next_power_of_2(m)))
    block_d = max(16, min(_MAX_BLOCK_D, triton.next_power_of_2(max(d, 1))))
    LAUNCHES["vq_fused"] += 1
    _vq_kernel[(triton.cdiv(m, block_m),)](
        x, codebook, cc.float(), cmax, codes, indices, sqerr, uncertain,
        m, k, d,
        *x.stride(), *codebook.stride(),
        *_slack_coefficients(d), _FAST_NORM_SQ_MAX,
        BLOCK_M=block_m, BLOCK_K=_BLOCK_K, BLOCK_D=block_d,
        # CPU tensors mean Triton's interpreter, whose tl.dot multiplies bf16 bit patterns
        # (triton-lang/triton#11584); fp32 operands give the same exact products there
        DOT_FP32=x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and x.device.type == "cpu"),
    )  # fmt: skip
    return codes, indices, sqerr, uncertain.bool()

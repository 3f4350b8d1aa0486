"""Triton kernels for frame-causal attention with in-register 3D RoPE: forward and backward.

Kernels and launchers only (tensors in, tensors out); the autograd boundary is
``lam_fast/ops/attention/triton.py``.

Problem. q: (B, H, Lq, D) holds the frames starting at frame ``q_frame_offset``; k, v: (B, H, Lk, D)
hold frames from frame 0 (a KV cache gives Lk = q_frame_offset * N + Lq). N = frame_tokens. Query i
(frame q_frame_offset + i // N) sees key j iff j // N <= q_frame_offset + i // N. Any strides.

Head dimension. A row of D values is processed as two half tiles: columns [0, D1) and [D1, D) with
D1 = ceil(D / 2), each padded to HALF_PAD = max(16, next_pow2(D1)) columns by masked loads: for
D >= 32 that is D padded to a power of two, below it tl.dot's 16-column minimum per half. RoPE rotates the pair (x[j], x[j + D/2]),
which is then the same column of the two halves: the rotation is elementwise in registers, with
angles computed from the token index and ``inv_freq``, and no rotated copy of q or k is written.
Scores are the sum of two dots, one per half.

Masking. Blocks are visited only where some query sees some key, with loop bounds taken from the
frame structure: the key loop of a query block stops at the end of the frame of its last query,
the query loop of a key block starts at the frame of its first key. Blocks in which every query
sees every key (all keys in frames <= the frame of the block's first query, all indices in bounds)
run without any element mask; only blocks straddling a frame boundary or a sequence end do.

Numerics follow flash-attention 2: fp32 online softmax in base 2 (``scale * log2(e)`` folded into the
scores), P and dS rounded to the input dtype before their matmuls (as the eager reference rounds its
probabilities), fp32 accumulation, and the rotated q and k rounded to the input dtype (as the
reference's rotated copies are). fp32 inputs use IEEE fp32 dots, not TF32, to match the reference.

Backward: ``_attn_bwd_dq_kernel`` (one program per query block) first computes
delta = rowsum(dO * O) for its rows and stores it (the flash-attention 2 preprocess, fused), then
accumulates dQ; ``_attn_bwd_dkdv_kernel`` (one program per key block, launched after, reading delta)
accumulates dK and dV. No atomics: the result is deterministic. dQ and dK are rotated back by the
inverse RoPE in the epilogue, so the gradients are w.r.t. the un-rotated inputs.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import torch
import triton
import triton.language as tl

#: Launches per kernel name; tests use it to prove that the Triton backend ran these kernels.
LAUNCHES: Counter[str] = Counter()

LOG2_E = 1.4426950408889634

_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


# ---------------------------------------------------------------------------------------------
# Shared device helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load_tile(ptrs, rows, n_rows, cols, N_COLS: tl.constexpr, COLS_PAD: tl.constexpr, CHECK_ROWS: tl.constexpr):
    """Load a (R, COLS_PAD) tile; columns >= N_COLS and (if CHECK_ROWS) rows >= n_rows read as 0.
    The column mask only exists when the head dimension is padded."""
    if CHECK_ROWS:
        if N_COLS < COLS_PAD:
            tile = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (cols[None, :] < N_COLS), other=0.0)
        else:
            tile = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
    else:
        if N_COLS < COLS_PAD:
            tile = tl.load(ptrs, mask=cols[None, :] < N_COLS, other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _load_halves(base, rows, n_rows, stride_row, stride_col, cols,
                 D1: tl.constexpr, D2: tl.constexpr, HALF_PAD: tl.constexpr, CHECK_ROWS: tl.constexpr):
    """Rows ``rows`` of a (L, D) matrix as two (R, HALF_PAD) tiles: columns [0, D1) and [D1, D1 + D2)."""
    ptrs = base + rows[:, None] * stride_row + cols[None, :] * stride_col
    x1 = _load_tile(ptrs, rows, n_rows, cols, D1, HALF_PAD, CHECK_ROWS)
    x2 = _load_tile(ptrs + D1 * stride_col, rows, n_rows, cols, D2, HALF_PAD, CHECK_ROWS)
    return x1, x2


@triton.jit
def _store_halves(base, x1, x2, rows, n_rows, stride_row, stride_col, cols,
                  D1: tl.constexpr, D2: tl.constexpr):
    """Store two fp32 half tiles into rows ``rows`` (< n_rows) of a (L, D) matrix, in its dtype."""
    ptrs = base + rows[:, None] * stride_row + cols[None, :] * stride_col
    in_rows = rows[:, None] < n_rows
    tl.store(ptrs, x1.to(base.dtype.element_ty), mask=in_rows & (cols[None, :] < D1))
    tl.store(ptrs + D1 * stride_col, x2.to(base.dtype.element_ty), mask=in_rows & (cols[None, :] < D2))


@triton.jit
def _rope_cos_sin(tokens, frame_offset, frame_tokens, grid_w, INV_FREQ, pairs, ROPE_PAIRS: tl.constexpr):
    """cos, sin: (R, HALF_PAD) fp32 RoPE angles (Rope3D) of ``tokens`` (R,), token 0 in frame ``frame_offset``.

    Pair j rotates by pos * inv_freq[j % P], pos = t (frame) for j < P, h = (i % N) // grid_w for
    j < 2P, w = i % grid_w for j < 3P; pairs j >= 3P (and padding) get angle 0. pos * inv_freq is the
    same fp32 product as the reference's table."""
    in_frame = tokens % frame_tokens
    t = (frame_offset + tokens // frame_tokens).to(tl.float32)
    h = (in_frame // grid_w).to(tl.float32)
    w = (in_frame % grid_w).to(tl.float32)
    axis = (pairs // ROPE_PAIRS)[None, :]
    freq = tl.load(INV_FREQ + pairs % ROPE_PAIRS, mask=pairs < 3 * ROPE_PAIRS, other=0.0)
    pos = tl.where(axis == 0, t[:, None], tl.where(axis == 1, h[:, None], w[:, None]))
    angle = pos * freq[None, :]
    return tl.cos(angle), tl.sin(angle)


@triton.jit
def _rotate(x1, x2, cos, sin):
    """(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin); pass -sin for the inverse (transpose)."""
    return x1 * cos - x2 * sin, x2 * cos + x1 * sin


@triton.jit
def _load_qk(base, tokens, n_tokens, stride_row, stride_col, cols, frame_offset, frame_tokens, grid_w, INV_FREQ,
             D1: tl.constexpr, D2: tl.constexpr, HALF_PAD: tl.constexpr, ROPE_PAIRS: tl.constexpr,
             ROPE: tl.constexpr, CHECK_ROWS: tl.constexpr):
    """Half tiles of q or k rows, rotated by RoPE in fp32 (if ROPE) and rounded back to the input dtype."""
    x1, x2 = _load_halves(base, tokens, n_tokens, stride_row, stride_col, cols, D1, D2, HALF_PAD, CHECK_ROWS)
    if ROPE:
        cos, sin = _rope_cos_sin(tokens, frame_offset, frame_tokens, grid_w, INV_FREQ, cols, ROPE_PAIRS)
        r1, r2 = _rotate(x1.to(tl.float32), x2.to(tl.float32), cos, sin)
        x1, x2 = r1.to(x1.dtype), r2.to(x2.dtype)
    return x1, x2


@triton.jit
def _dot(a, b, acc, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b. Operands are already rounded to the input dtype; DOT_DTYPE is that dtype, except
    under the interpreter, whose numpy matmul cannot multiply bf16 (stored as uint16): there it is
    fp32, which represents the rounded operands exactly."""
    return tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc, input_precision=PRECISION)


@triton.jit
def _frame_visible(q_tokens, k_tokens, frame_tokens, q_frame_offset):
    """Frame-causal visibility for broadcastable query / key index tensors."""
    return k_tokens // frame_tokens <= q_frame_offset + q_tokens // frame_tokens


@triton.jit
def _key_bounds(m0, Lq, Lk, frame_tokens, q_frame_offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """For the query block starting at m0: keys [0, full_end) (whole BLOCK_N blocks) are seen by all
    of its queries; keys [full_end, end) need the element mask; keys >= end are seen by none."""
    first_frame = q_frame_offset + m0 // frame_tokens
    last_frame = q_frame_offset + (tl.minimum(m0 + BLOCK_M, Lq) - 1) // frame_tokens
    full_end = tl.minimum((first_frame + 1) * frame_tokens, Lk) // BLOCK_N * BLOCK_N
    end = tl.minimum((last_frame + 1) * frame_tokens, Lk)
    return full_end, end


@triton.jit
def _query_bounds(n0, Lq, Lk, frame_tokens, q_frame_offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """For the key block starting at n0, query block starts (multiples of BLOCK_M): blocks before
    ``start`` see none of its keys; blocks in [full_start, full_end) see all of them and lie inside
    Lq; every other block in [start, end) needs the element mask."""
    first_frame = n0 // frame_tokens
    last_frame = (tl.minimum(n0 + BLOCK_N, Lk) - 1) // frame_tokens
    # clamped at 0 before dividing: keys of cached frames are seen by every query
    start = tl.maximum((first_frame - q_frame_offset) * frame_tokens, 0) // BLOCK_M * BLOCK_M
    full_start = tl.cdiv(tl.maximum((last_frame - q_frame_offset) * frame_tokens, 0), BLOCK_M) * BLOCK_M
    full_end = Lq // BLOCK_M * BLOCK_M
    end = tl.cdiv(Lq, BLOCK_M) * BLOCK_M
    return start, full_start, full_end, end


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _fwd_block(acc1, acc2, m_i, l_i, q1, q2, rows, n0, K, V, INV_FREQ,
               stride_kn, stride_kd, stride_vn, stride_vd, cols,
               Lk, frame_tokens, grid_w, q_frame_offset, qk_scale,
               D1: tl.constexpr, D2: tl.constexpr, HALF_PAD: tl.constexpr, ROPE_PAIRS: tl.constexpr,
               ROPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, MASK: tl.constexpr):
    """One online-softmax step over keys [n0, n0 + BLOCK_N); MASK applies the frame and bound mask."""
    keys = n0 + tl.arange(0, BLOCK_N)
    k1, k2 = _load_qk(K, keys, Lk, stride_kn, stride_kd, cols, 0, frame_tokens, grid_w, INV_FREQ,
                      D1, D2, HALF_PAD, ROPE_PAIRS, ROPE, MASK)
    s = _dot(q1, tl.trans(k1), tl.zeros((BLOCK_M, BLOCK_N), tl.float32), DOT_DTYPE, PRECISION)
    s = _dot(q2, tl.trans(k2), s, DOT_DTYPE, PRECISION) * qk_scale
    if MASK:
        visible = _frame_visible(rows[:, None], keys[None, :], frame_tokens, q_frame_offset) & (keys[None, :] < Lk)
        s = tl.where(visible, s, float("-inf"))
    # finite after the first block: key 0 is visible to every query, and the first block holds it
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v1, v2 = _load_halves(V, keys, Lk, stride_vn, stride_vd, cols, D1, D2, HALF_PAD, MASK)
    p = p.to(v1.dtype)
    acc1 = _dot(p, v1, acc1 * alpha[:, None], DOT_DTYPE, PRECISION)
    acc2 = _dot(p, v2, acc2 * alpha[:, None], DOT_DTYPE, PRECISION)
    return acc1, acc2, m_new, l_i


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE, INV_FREQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    H, Lq, Lk, frame_tokens, grid_w, q_frame_offset, qk_scale,
    D1: tl.constexpr, D2: tl.constexpr, HALF_PAD: tl.constexpr, ROPE_PAIRS: tl.constexpr, ROPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """Grid (B*H, cdiv(Lq, BLOCK_M)). Writes O: (B, H, Lq, D) and LSE: (B, H, Lq) fp32, the base-2
    log-sum-exp of the scores times qk_scale = scale * log2(e)."""
    bh = tl.program_id(0).to(tl.int64)
    # later query blocks see more keys: schedule them first
    m0 = (tl.num_programs(1) - 1 - tl.program_id(1)) * BLOCK_M
    b, h = bh // H, bh % H
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    O += b * stride_ob + h * stride_oh
    rows = m0 + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, HALF_PAD)
    q1, q2 = _load_qk(Q, rows, Lq, stride_qm, stride_qd, cols, q_frame_offset, frame_tokens, grid_w, INV_FREQ,
                      D1, D2, HALF_PAD, ROPE_PAIRS, ROPE, True)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc1 = tl.zeros((BLOCK_M, HALF_PAD), tl.float32)
    acc2 = tl.zeros((BLOCK_M, HALF_PAD), tl.float32)
    full_end, end = _key_bounds(m0, Lq, Lk, frame_tokens, q_frame_offset, BLOCK_M, BLOCK_N)
    for n0 in range(0, full_end, BLOCK_N):
        acc1, acc2, m_i, l_i = _fwd_block(
            acc1, acc2, m_i, l_i, q1, q2, rows, n0, K, V, INV_FREQ, stride_kn, stride_kd, stride_vn, stride_vd,
            cols, Lk, frame_tokens, grid_w, q_frame_offset, qk_scale, D1, D2, HALF_PAD, ROPE_PAIRS, ROPE,
            BLOCK_M, BLOCK_N, DOT_DTYPE, PRECISION, False)
    for n0 in range(full_end, end, BLOCK_N):
        acc1, acc2, m_i, l_i = _fwd_block(
            acc1, acc2, m_i, l_i, q1, q2, rows, n0, K, V, INV_FREQ, stride_kn, stride_kd, stride_vn, stride_vd,
            cols, Lk, frame_tokens, grid_w, q_frame_offset, qk_scale, D1, D2, HALF_PAD, ROPE_PAIRS, ROPE,
            BLOCK_M, BLOCK_N, DOT_DTYPE, PRECISION, True)
    inv_l = 1.0 / l_i
    _store_halves(O, acc1 * inv_l[:, None], acc2 * inv_l[:, None], rows, Lq, stride_om, stride_od, cols, D1, D2)
    tl.store(LSE + bh * Lq + rows, m_i + tl.log2(l_i), mask=rows < Lq)


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _dq_block(dq1, dq2, q1, q2, do1, do2, lse, delta, rows, n0, K, V, INV_FREQ,
              stride_kn, stride_kd, stride_vn, stride_vd, cols,
              Lk, frame_tokens, grid_w, q_frame_offset, qk_scale,
              D1: tl.constexpr, D2: tl.constexpr, HALF_PAD: tl.constexpr, ROPE_PAIRS: tl.constexpr,
              ROPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, MASK: tl.constexpr):
    """dQ (rotated, unscaled) += dS @ K over keys [n0, n0 + BLOCK_N)."""
    keys = n0 + tl.arange(0, BLOCK_N)
    k1, k2 = _load_qk(K, keys, Lk, stride_kn, stride_kd, cols, 0, frame_tokens, grid_w, INV_FREQ,
                      D1, D2, HALF_PAD, ROPE_PAIRS, ROPE, MASK)
    v1, v2 = _load_halves(V, keys, Lk, stride_vn, stride_vd, cols, D1, D2, HALF_PAD, MASK)
    zeros = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    s = _dot(q2, tl.trans(k2), _dot(q1, tl.trans(k1), zeros, DOT_DTYPE, PRECISION), DOT_DTYPE, PRECISION)
    p = tl.exp2(s * qk_scale - lse[:, None])
    if MASK:
        visible = _frame_visible(rows[:, None], keys[None, :], frame_tokens, q_frame_offset) & (keys[None, :] < Lk)
        p = tl.where(visible, p, 0.0)
    dp = _dot(do2, tl.trans(v2), _dot(do1, tl.trans(v1), zeros, DOT_DTYPE, PRECISION), DOT_DTYPE, PRECISION)
    ds = (p * (dp - delta[:, None])).to(k1.dtype)
    dq1 = _dot(ds, k1, dq1, DOT_DTYPE, PRECISION)
    dq2 = _dot(ds, k2, dq2, DOT_DTYPE, PRECISION)
    return dq1, dq2


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, O, DO, DQ, LSE, DELTA, INV_FREQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    H, Lq, Lk, frame_tokens, grid_w, q_frame_offset, sm_scale, qk_scale,
    D1: tl.constexpr, D2: tl.constexpr, HALF_PAD: tl.constexpr, ROPE_PAIRS: tl.constexpr, ROPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """Grid (B*H, cdiv(Lq, BLOCK_M)). Writes DELTA = rowsum(dO * O): (B, H, Lq) fp32 (read by the
    dK/dV kernel) and DQ: (B, H, Lq, D), the gradient w.r.t. the un-rotated q."""
    bh = tl.program_id(0).to(tl.int64)
    m0 = (tl.num_programs(1) - 1 - tl.program_id(1)) * BLOCK_M
    b, h = bh // H, bh % H
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    O += b * stride_ob + h * stride_oh
    DO += b * stride_dob + h * stride_doh
    DQ += b * stride_dqb + h * stride_dqh
    rows = m0 + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, HALF_PAD)
    in_rows = rows < Lq
    o1, o2 = _load_halves(O, rows, Lq, stride_om, stride_od, cols, D1, D2, HALF_PAD, True)
    do1, do2 = _load_halves(DO, rows, Lq, stride_dom, stride_dod, cols, D1, D2, HALF_PAD, True)
    delta = tl.sum(o1.to(tl.float32) * do1.to(tl.float32), 1) + tl.sum(o2.to(tl.float32) * do2.to(tl.float32), 1)
    tl.store(DELTA + bh * Lq + rows, delta, mask=in_rows)
    lse = tl.load(LSE + bh * Lq + rows, mask=in_rows, other=0.0)
    q1, q2 = _load_qk(Q, rows, Lq, stride_qm, stride_qd, cols, q_frame_offset, frame_tokens, grid_w, INV_FREQ,
                      D1, D2, HALF_PAD, ROPE_PAIRS, ROPE, True)
    dq1 = tl.zeros((BLOCK_M, HALF_PAD), tl.float32)
    dq2 = tl.zeros((BLOCK_M, HALF_PAD), tl.float32)
    full_end, end = _key_bounds(m0, Lq, Lk, frame_tokens, q_frame_offset, BLOCK_M, BLOCK_N)
    for n0 in range(0, full_end, BLOCK_N):
        dq1, dq2 = _dq_block(
            dq1, dq2, q1, q2, do1, do2, lse, delta, rows, n0, K, V, INV_FREQ, stride_kn, stride_kd, stride_vn,
            stride_vd, cols, Lk, frame_tokens, grid_w, q_frame_offset, qk_scale, D1, D2, HALF_PAD, ROPE_PAIRS,
            ROPE, BLOCK_M, BLOCK_N, DOT_DTYPE, PRECISION, False)
    for n0 in range(full_end, end, BLOCK_N):
        dq1, dq2 = _dq_block(
            dq1, dq2, q1, q2, do1, do2, lse, delta, rows, n0, K, V, INV_FREQ, stride_kn, stride_kd, stride_vn,
            stride_vd, cols, Lk, frame_tokens, grid_w, q_frame_offset, qk_scale, D1, D2, HALF_PAD, ROPE_PAIRS,
            ROPE, BLOCK_M, BLOCK_N, DOT_DTYPE, PRECISION, True)
    dq1, dq2 = dq1 * sm_scale, dq2 * sm_scale
    if ROPE:  # gradient of the rotation: rotate back
        cos, sin = _rope_cos_sin(rows, q_frame_offset, frame_tokens, grid_w, INV_FREQ, cols, ROPE_PAIRS)
        dq1, dq2 = _rotate(dq1, dq2, cos, -sin)
    _store_halves(DQ, dq1, dq2, rows, Lq, stride_dqm, stride_dqd, cols, D1, D2)


@triton.jit
def _dkdv_block(dk1, dk2, dv1, dv2, k1, k2, v1, v2, keys, m0, Q, DO, LSE, DELTA, INV_FREQ,
                stride_qm, stride_qd, stride_dom, stride_dod, cols,
                Lq, frame_tokens, grid_w, q_frame_offset, qk_scale,
                D1: tl.constexpr, D2: tl.constexpr, HALF_PAD: tl.constexpr, ROPE_PAIRS: tl.constexpr,
                ROPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, MASK: tl.constexpr):
    """dV += P^T @ dO and dK (rotated, unscaled) += dS^T @ Q over queries [m0, m0 + BLOCK_M),
    computed transposed ((BLOCK_N, BLOCK_M) tiles) so the key block stays in registers."""
    rows = m0 + tl.arange(0, BLOCK_M)
    q1, q2 = _load_qk(Q, rows, Lq, stride_qm, stride_qd, cols, q_frame_offset, frame_tokens, grid_w, INV_FREQ,
                      D1, D2, HALF_PAD, ROPE_PAIRS, ROPE, MASK)
    do1, do2 = _load_halves(DO, rows, Lq, stride_dom, stride_dod, cols, D1, D2, HALF_PAD, MASK)
    if MASK:
        lse = tl.load(LSE + rows, mask=rows < Lq, other=0.0)
        delta = tl.load(DELTA + rows, mask=rows < Lq, other=0.0)
    else:
        lse = tl.load(LSE + rows)
        delta = tl.load(DELTA + rows)
    zeros = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    s_t = _dot(k2, tl.trans(q2), _dot(k1, tl.trans(q1), zeros, DOT_DTYPE, PRECISION), DOT_DTYPE, PRECISION)
    p_t = tl.exp2(s_t * qk_scale - lse[None, :])
    if MASK:  # masked scores can exceed the row's lse (even overflow): select, never multiply
        visible = _frame_visible(rows[None, :], keys[:, None], frame_tokens, q_frame_offset) & (rows[None, :] < Lq)
        p_t = tl.where(visible, p_t, 0.0)
    dv1 = _dot(p_t.to(v1.dtype), do1, dv1, DOT_DTYPE, PRECISION)
    dv2 = _dot(p_t.to(v1.dtype), do2, dv2, DOT_DTYPE, PRECISION)
    dp_t = _dot(v2, tl.trans(do2), _dot(v1, tl.trans(do1), zeros, DOT_DTYPE, PRECISION), DOT_DTYPE, PRECISION)
    ds_t = (p_t * (dp_t - delta[None, :])).to(q1.dtype)
    dk1 = _dot(ds_t, q1, dk1, DOT_DTYPE, PRECISION)
    dk2 = _dot(ds_t, q2, dk2, DOT_DTYPE, PRECISION)
    return dk1, dk2, dv1, dv2


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, INV_FREQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    H, Lq, Lk, frame_tokens, grid_w, q_frame_offset, sm_scale, qk_scale,
    D1: tl.constexpr, D2: tl.constexpr, HALF_PAD: tl.constexpr, ROPE_PAIRS: tl.constexpr, ROPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """Grid (B*H, cdiv(Lk, BLOCK_N)). Writes DK (w.r.t. the un-rotated k) and DV: (B, H, Lk, D)."""
    bh = tl.program_id(0).to(tl.int64)
    n0 = tl.program_id(1) * BLOCK_N  # earlier key blocks are seen by more queries: they start first
    b, h = bh // H, bh % H
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DK += b * stride_dkb + h * stride_dkh
    DV += b * stride_dvb + h * stride_dvh
    LSE += bh * Lq
    DELTA += bh * Lq
    keys = n0 + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, HALF_PAD)
    # rows past Lk are zeros whose (garbage) gradients are never stored: no key mask needed below
    k1, k2 = _load_qk(K, keys, Lk, stride_kn, stride_kd, cols, 0, frame_tokens, grid_w, INV_FREQ,
                      D1, D2, HALF_PAD, ROPE_PAIRS, ROPE, True)
    v1, v2 = _load_halves(V, keys, Lk, stride_vn, stride_vd, cols, D1, D2, HALF_PAD, True)
    dk1 = tl.zeros((BLOCK_N, HALF_PAD), tl.float32)
    dk2 = tl.zeros((BLOCK_N, HALF_PAD), tl.float32)
    dv1 = tl.zeros((BLOCK_N, HALF_PAD), tl.float32)
    dv2 = tl.zeros((BLOCK_N, HALF_PAD), tl.float32)
    start, full_start, full_end, end = _query_bounds(n0, Lq, Lk, frame_tokens, q_frame_offset, BLOCK_M, BLOCK_N)
    for m0 in range(start, tl.minimum(full_start, end), BLOCK_M):  # straddles the key block's frames
        dk1, dk2, dv1, dv2 = _dkdv_block(
            dk1, dk2, dv1, dv2, k1, k2, v1, v2, keys, m0, Q, DO, LSE, DELTA, INV_FREQ, stride_qm, stride_qd,
            stride_dom, stride_dod, cols, Lq, frame_tokens, grid_w, q_frame_offset, qk_scale, D1, D2, HALF_PAD,
            ROPE_PAIRS, ROPE, BLOCK_M, BLOCK_N, DOT_DTYPE, PRECISION, True)
    for m0 in range(full_start, full_end, BLOCK_M):
        dk1, dk2, dv1, dv2 = _dkdv_block(
            dk1, dk2, dv1, dv2, k1, k2, v1, v2, keys, m0, Q, DO, LSE, DELTA, INV_FREQ, stride_qm, stride_qd,
            stride_dom, stride_dod, cols, Lq, frame_tokens, grid_w, q_frame_offset, qk_scale, D1, D2, HALF_PAD,
            ROPE_PAIRS, ROPE, BLOCK_M, BLOCK_N, DOT_DTYPE, PRECISION, False)
    for m0 in range(tl.maximum(full_start, full_end), end, BLOCK_M):  # the partial last query block
        dk1, dk2, dv1, dv2 = _dkdv_block(
            dk1, dk2, dv1, dv2, k1, k2, v1, v2, keys, m0, Q, DO, LSE, DELTA, INV_FREQ, stride_qm, stride_qd,
            stride_dom, stride_dod, cols, Lq, frame_tokens, grid_w, q_frame_offset, qk_scale, D1, D2, HALF_PAD,
            ROPE_PAIRS, ROPE, BLOCK_M, BLOCK_N, DOT_DTYPE, PRECISION, True)
    dk1, dk2 = dk1 * sm_scale, dk2 * sm_scale
    if ROPE:
        cos, sin = _rope_cos_sin(keys, 0, frame_tokens, grid_w, INV_FREQ, cols, ROPE_PAIRS)
        dk1, dk2 = _rotate(dk1, dk2, cos, -sin)
    _store_halves(DK, dk1, dk2, keys, Lk, stride_dkn, stride_dkd, cols, D1, D2)
    _store_halves(DV, dv1, dv2, keys, Lk, stride_dvn, stride_dvd, cols, D1, D2)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


class Blocks(NamedTuple):
    """Tile sizes (powers of two >= 16): BLOCK_M queries by BLOCK_N keys."""

    block_m: int
    block_n: int


class _Launch(NamedTuple):
    blocks: Blocks
    num_warps: int
    num_stages: int


def _launch_config(q: torch.Tensor, half_pad: int, backward: bool, blocks: Blocks | None) -> _Launch:
    """Tile sizes and launch options: untuned starting points in the flash-attention 2 tutorial's
    range (no GPU in CI; perf/ measures them). fp32 tiles are halved, and head dims past 128 get
    small tiles, to keep the operands staged in shared memory well inside an H100's 227 KB. The
    interpreter runs one program at a time: small tiles that still cross tile edges on test shapes."""
    fp32 = q.element_size() == 4
    wide = 2 * half_pad > 128
    if blocks is None:
        if triton.knobs.runtime.interpret:
            blocks = Blocks(16, 16)
        elif wide:
            blocks = Blocks(16, 16) if fp32 else Blocks(32, 32)
        elif fp32:
            blocks = Blocks(32, 32) if backward else Blocks(64, 32)
        else:
            blocks = Blocks(64, 64) if backward else Blocks(128, 64)
    for size in blocks:
        if size < 16 or size & (size - 1):
            raise ValueError(f"block sizes must be powers of two >= 16, got {tuple(blocks)}")
    num_warps = 8 if 2 * half_pad >= 128 else 4  # D = 128: the fp32 accumulators need the registers
    num_stages = 2 if backward or fp32 or wide else 3
    return _Launch(blocks, num_warps, num_stages)


def _common_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame_tokens: int, q_frame_offset: int,
                 inv_freq: torch.Tensor | None, grid_w: int):
    """Shared checks and the kernels' shape/RoPE constexprs."""
    if q.dtype not in _TL_DTYPES:
        raise TypeError(f"the triton attention kernels take float32, bfloat16 or float16, got {q.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q must be (B, H, Lq, D) and k, v (B, H, Lk, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    if frame_tokens < 1 or q_frame_offset < 0:
        raise ValueError(f"need frame_tokens >= 1 and q_frame_offset >= 0, got {frame_tokens}, {q_frame_offset}")
    d = q.shape[3]
    d1 = (d + 1) // 2
    half_pad = max(16, triton.next_power_of_2(d1))
    if inv_freq is None:
        rope_pairs = 1  # unused
    else:
        rope_pairs = inv_freq.numel()
        if d % 2 or rope_pairs != (d // 2) // 3 or rope_pairs < 1 or inv_freq.dtype != torch.float32:
            raise ValueError(f"inv_freq must be float32 with (D/2)//3 entries for even D={d}, got {inv_freq.shape}")
        if inv_freq.device != q.device or not inv_freq.is_contiguous():
            raise ValueError("inv_freq must be contiguous and on q's device")
        if grid_w < 1:
            raise ValueError(f"grid_w must be >= 1, got {grid_w}")
    dot_dtype = tl.float32 if triton.knobs.runtime.interpret else _TL_DTYPES[q.dtype]
    return dict(
        D1=d1, D2=d - d1, HALF_PAD=half_pad, ROPE_PAIRS=rope_pairs, ROPE=inv_freq is not None,
        # fp32 must not silently become TF32; "tf32" is tl.dot's default and means nothing for 16-bit operands
        DOT_DTYPE=dot_dtype, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )


def attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    frame_tokens: int,
    scale: float,
    q_frame_offset: int = 0,
    inv_freq: torch.Tensor | None = None,
    grid_w: int = 1,
    blocks: Blocks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame-causal attention forward.

    q: (B, H, Lq, D), k, v: (B, H, Lk, D), one dtype (fp32/bf16/fp16), any strides. inv_freq: None
    (no RoPE) or Rope3D.inv_freq, ((D/2)//3,) fp32 on q's device; grid_w: the RoPE grid's width.
    Returns out: (B, H, Lq, D) contiguous, q's dtype; lse: (B, H, Lq) fp32, the base-2
    log-sum-exp of scale * log2(e) * scores (what the backward needs).
    """
    meta = _common_args(q, k, v, frame_tokens, q_frame_offset, inv_freq, grid_w)
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    out = q.new_empty(q.shape)
    lse = q.new_empty((b, h, lq), dtype=torch.float32)
    if out.numel() == 0:
        return out, lse.zero_()
    launch = _launch_config(q, meta["HALF_PAD"], False, blocks)
    grid = (b * h, triton.cdiv(lq, launch.blocks.block_m))
    _attn_fwd_kernel[grid](
        q, k, v, out, lse, q if inv_freq is None else inv_freq,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        h, lq, lk, frame_tokens, grid_w, q_frame_offset, scale * LOG2_E,
        BLOCK_M=launch.blocks.block_m, BLOCK_N=launch.blocks.block_n,
        num_warps=launch.num_warps, num_stages=launch.num_stages, **meta,
    )
    LAUNCHES["attn_fwd"] += 1
    return out, lse


def attention_bwd(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    frame_tokens: int,
    scale: float,
    q_frame_offset: int = 0,
    inv_freq: torch.Tensor | None = None,
    grid_w: int = 1,
    blocks: Blocks | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of :func:`attention_fwd` w.r.t. the un-rotated q, k and v.

    grad_out, out: (B, H, Lq, D) (any strides); lse: (B, H, Lq) fp32 contiguous from
    :func:`attention_fwd`; the other arguments as given to it. Returns tensors shaped and strided
    like q, k, v (``empty_like``), in their dtype.
    """
    meta = _common_args(q, k, v, frame_tokens, q_frame_offset, inv_freq, grid_w)
    if grad_out.shape != q.shape or out.shape != q.shape or grad_out.dtype != q.dtype or out.dtype != q.dtype:
        raise ValueError("grad_out and out must have q's shape and dtype")
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    lse = lse.contiguous()
    delta = torch.empty_like(lse)
    rope_arg = q if inv_freq is None else inv_freq
    scalars = (h, lq, lk, frame_tokens, grid_w, q_frame_offset, scale, scale * LOG2_E)
    launch = _launch_config(q, meta["HALF_PAD"], True, blocks)
    options = dict(BLOCK_M=launch.blocks.block_m, BLOCK_N=launch.blocks.block_n,
                   num_warps=launch.num_warps, num_stages=launch.num_stages, **meta)
    # dq first: it also writes delta, which the dk/dv kernel reads
    _attn_bwd_dq_kernel[(b * h, triton.cdiv(lq, launch.blocks.block_m))](
        q, k, v, out, grad_out, dq, lse, delta, rope_arg,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *grad_out.stride(), *dq.stride(),
        *scalars, **options,
    )
    LAUNCHES["attn_bwd_dq"] += 1
    _attn_bwd_dkdv_kernel[(b * h, triton.cdiv(lk, launch.blocks.block_n))](
        q, k, v, grad_out, dk, dv, lse, delta, rope_arg,
        *q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), *dk.stride(), *dv.stride(),
        *scalars, **options,
    )
    LAUNCHES["attn_bwd_dkdv"] += 1
    return dq, dk, dv

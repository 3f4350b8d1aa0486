"""The Triton backends of adaln_modulate, gated_residual and vq_lookup against the reference and an
fp64 oracle. On a GPU they run on CUDA tensors; without one the kernels run on CPU tensors in
Triton's interpreter (conftest.py sets TRITON_INTERPRET=1), so shapes stay small.

The tests every kernel backend passes (identity at zero modulation, duplicate / non-finite / empty
VQ inputs, opcheck, torch.compile) are in test_adaln_vq_backends.py; the Triton-only ones are here."""

import functools

import op_support
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_support import DTYPES, LAYOUTS, TRITON_DEVICE, adaln_args, assert_frame_op_matches_oracle, frame_cases, leaves
from op_support import run_with_grads
from tolerance import assert_close_to_oracle

pytest.importorskip("triton", reason="the Triton backends need triton (the [gpu] extra)")

import lam_fast.ops.vq.triton  # noqa: E402, F401  (registers torch.ops.lam_fast_triton.vq_lookup)
from lam_fast._kernels import adaln as adaln_kernels  # noqa: E402
from lam_fast._kernels import vq as vq_kernels  # noqa: E402
from lam_fast.ops import adaln_modulate, gated_residual, vq_lookup  # noqa: E402
from lam_fast.ops._dispatch import CALLS  # noqa: E402
from lam_fast.ops.vq.reference import nearest_code_reference  # noqa: E402

DEVICE = TRITON_DEVICE
# Around the kernels' blocks: 16 rows per program up to C = 128, 8 at C = 130 (256 lanes); a
# backward program takes 64 rows of a frame, so N = 70 splits a frame over two programs.
FRAME_TOKENS = (1, 3, 17, 70)
CHANNELS = (1, 7, 17, 65, 130)


make = functools.partial(op_support.make, device=DEVICE)
make_2d = functools.partial(op_support.make_2d, device=DEVICE)

frame_case = frame_cases(frame_tokens=FRAME_TOKENS, channels=CHANNELS, max_batch=2)


@settings(max_examples=50)
@given(case=frame_case, eps=st.sampled_from([1e-6, 1e-3]))
def test_adaln_modulate_matches_oracle(case, eps):
    assert_frame_op_matches_oracle("adaln_modulate", case, "triton", device=DEVICE, eps=eps)


@settings(max_examples=50)
@given(case=frame_case)
def test_gated_residual_matches_oracle(case):
    assert_frame_op_matches_oracle("gated_residual", case, "triton", device=DEVICE)


def test_adaln_expanded_upstream_gradient():
    """``out.sum().backward()`` hands the kernels a stride-0 gradient; they read it in place."""
    g = torch.Generator().manual_seed(2)
    x = make(g, (2, 6, 9), torch.float32, "contiguous")
    shift, scale = (make(g, (2, 3, 9), torch.float32, "contiguous") for _ in range(2))

    def grads(backend, dtype=None):
        inputs = leaves(x, shift, scale, dtype=dtype)
        adaln_modulate(*inputs, frame_tokens=2, backend=backend).sum().backward()
        return [v.grad for v in inputs]

    for name, got, want, exact in zip(
        ("grad_x", "grad_shift", "grad_scale"), grads("triton"), grads("reference"), grads("reference", torch.float64)
    ):
        assert_close_to_oracle(got, want, exact, name=name)


def test_adaln_backward_is_deterministic():
    """Per-frame gradients are fixed-order sums (no atomics): two runs agree bit for bit."""
    g = torch.Generator().manual_seed(4)
    x, grad_out = (make(g, (2, 140, 33), torch.float32, "contiguous") for _ in range(2))
    shift, scale = (make(g, (2, 2, 33), torch.float32, "contiguous") for _ in range(2))
    grads = functools.partial(run_with_grads, grad_out=grad_out, backend="triton", frame_tokens=70)
    runs = [grads(adaln_modulate, leaves(x, shift, scale))[1] for _ in range(2)]
    runs += [grads(gated_residual, leaves(x, x, shift))[1] for _ in range(2)]
    for a, b in zip(runs[0] + runs[2], runs[1] + runs[3]):
        assert torch.equal(a, b)


# ---- VQ ------------------------------------------------------------------------------------------


def nearest_triton(x, codebook):
    return vq_lookup(x, codebook, backend="triton").indices


def assert_fast_path_sound(x, codebook, expected):
    """Rows the fp32 kernel calls certain already hold the reference's index, before any recheck."""
    _codes, indices, _sqerr, uncertain = vq_kernels.vq_fused(x, codebook)
    assert torch.equal(indices[~uncertain], expected[~uncertain])
    return uncertain


@settings(max_examples=50)
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.sampled_from([1, 3, 17, 65, 130]),
    k=st.sampled_from([1, 2, 7, 64, 65, 257]),  # around the 64-code blocks
    d=st.sampled_from([1, 3, 16, 17, 65, 130]),  # around the 16..64-wide D chunks
    dtype=st.sampled_from(DTYPES),
    layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS)),
)
def test_vq_indices_equal_reference(seed, m, k, d, dtype, layouts):
    g = torch.Generator().manual_seed(seed)
    x = make_2d(torch.randn(m, d, generator=g), dtype, layouts[0])
    codebook = make_2d(torch.randn(k, d, generator=g), dtype, layouts[1])
    expected = nearest_code_reference(x, codebook)
    got = nearest_triton(x, codebook)
    assert got.dtype == torch.int64 and got.shape == (m,)
    assert torch.equal(got, expected)
    assert_fast_path_sound(x, codebook, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vq_fast_path_decides_random_rows(dtype):
    """On random data the fp32 bound settles nearly every row: the float64 recheck is the exception."""
    g = torch.Generator().manual_seed(9)
    x, codebook = (make_2d(torch.randn(n, 32, generator=g), dtype, "contiguous") for n in (128, 100))
    uncertain = assert_fast_path_sound(x, codebook, nearest_code_reference(x, codebook))
    assert uncertain.float().mean().item() < 0.05


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(DTYPES))
def test_vq_near_ties(seed, dtype):
    """Each row x has codes c and c' = x + (1 +- 2^-e) Q (c - x), Q a random rotation, e in 4..30:
    distance gaps from far above the fp32 bound to far below it, with unrelated fp32 rounding in
    the two distances (with a zero bound, about half these fp32 rows come out wrong but 'certain')."""
    g = torch.Generator().manual_seed(seed)
    m, d = 60, 24
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    c = x + 0.3 * torch.randn(m, d, generator=g, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(m, d, d, generator=g, dtype=torch.float64))
    stretch = 1 + (torch.randint(0, 2, (m, 1), generator=g) * 2 - 1) * 2.0 ** -torch.randint(4, 31, (m, 1), generator=g)
    c_near = x + stretch * torch.einsum("mij,mj->mi", rotation, c - x)
    codebook = make_2d(torch.cat([c, c_near])[torch.randperm(2 * m, generator=g)], dtype, "contiguous")
    x = make_2d(x, dtype, "contiguous")
    expected = nearest_code_reference(x, codebook)
    assert torch.equal(nearest_triton(x, codebook), expected)
    assert_fast_path_sound(x, codebook, expected)


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(DTYPES))
def test_vq_mirror_pairs(seed, dtype):
    """Each row x0 has a pair of codes c, c' = x0 + signed permutation of (c - x0), equally far from
    it; x is x0 with its coordinate q (0 in x0) set to 0 (an exact tie: lowest index) or +-k 2^-e,
    e in 6..22, so |x - c|^2 - |x - c'|^2 = 2 x_q (c'_q - c_q) runs from far above the fp32 bound to
    below fp32 resolution (the kernel sees a tie that is not one). Values are multiples of 1/16
    below 4, exact in every dtype, except x_q."""
    g = torch.Generator().manual_seed(seed)
    m, d = 60, 24
    rows = torch.arange(m)
    x = torch.randint(-32, 33, (m, d), generator=g) / 16
    q = torch.randint(0, d, (m,), generator=g)
    x[rows, q] = 0.0
    c = x + torch.randint(-3, 4, (m, d), generator=g) / 16
    perm = torch.stack([torch.randperm(d, generator=g) for _ in range(m)])
    sign = torch.randint(0, 2, (m, d), generator=g) * 2 - 1
    c_mirror = x + sign * (c - x).gather(1, perm)
    codebook = torch.cat([c, c_mirror])[torch.randperm(2 * m, generator=g)]
    x_q = torch.randint(-3, 4, (m,), generator=g) * 2.0 ** -torch.randint(6, 23, (m,), generator=g).float()
    x[rows, q] = x_q
    x, codebook = make_2d(x, dtype, "contiguous"), make_2d(codebook, dtype, "contiguous")
    expected = nearest_code_reference(x, codebook)
    assert torch.equal(nearest_triton(x, codebook), expected)
    uncertain = assert_fast_path_sound(x, codebook, expected)
    assert uncertain[(x_q == 0).to(DEVICE)].all()  # exact ties are never decided in fp32
    assert not uncertain.all()


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(DTYPES))
def test_vq_exact_ties_go_to_the_lowest_index(seed, dtype):
    """Small integers: every distance is exact, ties abound; the answer is the first minimum."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (97, 5), generator=g)
    codebook = torch.randint(-2, 3, (70, 5), generator=g)
    exact = ((x[:, None, :] - codebook[None, :, :]) ** 2).sum(-1).argmin(1)  # int64: first minimum
    x, codebook = make_2d(x, dtype, "contiguous"), make_2d(codebook, dtype, "contiguous")
    got = nearest_triton(x, codebook).cpu()
    assert torch.equal(got, exact)
    assert torch.equal(got, nearest_code_reference(x, codebook).cpu())


# ---- backend plumbing ----------------------------------------------------------------------------


def test_triton_backends_run_their_own_kernels():
    x, shift, scale = adaln_args(requires_grad=True, device=DEVICE)
    codebook = torch.randn(7, 19, device=DEVICE, requires_grad=True)
    calls = {op: CALLS[(op, "triton")] for op in ("adaln_modulate", "gated_residual", "vq_lookup")}
    launches = adaln_kernels.LAUNCHES.copy() + vq_kernels.LAUNCHES.copy()
    h = adaln_modulate(x, shift, scale, frame_tokens=5, backend="triton")
    h = gated_residual(x, h, shift, frame_tokens=5, backend="triton")
    out = vq_lookup(h.flatten(0, 1), codebook, backend="triton")
    (out.quantized.sum() + out.commitment_loss + out.codebook_loss).backward()
    for op, before in calls.items():
        assert CALLS[(op, "triton")] == before + 1, op
    ran = adaln_kernels.LAUNCHES + vq_kernels.LAUNCHES - launches
    assert ran == {"modulate_fwd": 1, "modulate_bwd": 1, "gated_fwd": 1, "gated_bwd": 1, "vq_fused": 1}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vq_opcheck(dtype):
    """Schema, fake tensors and autograd registration of the fused VQ op (AdaLN's: test_adaln_vq_backends.py)."""
    x, _, _ = adaln_args(dtype, device=DEVICE)
    codebook = torch.randn(7, 19, device=DEVICE).to(dtype).requires_grad_()
    torch.library.opcheck(torch.ops.lam_fast_triton.vq_lookup, (x.flatten(0, 1).requires_grad_(), codebook))

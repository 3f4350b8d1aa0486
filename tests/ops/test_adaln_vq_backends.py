"""adaln_modulate, gated_residual and vq_lookup: the tests every kernel backend (C++, Triton, CUDA)
passes, one test parametrized over the backends (a backend whose module is missing skips with the
reason; ``cuda`` is marked ``gpu`` and skips without a CUDA device). The backend-only tests are in
test_adaln_cpp.py, test_vq_cpp.py and test_adaln_vq_triton.py."""

import functools
import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_support import (DTYPES, LAYOUTS, adaln_args, assert_frame_op_matches_oracle, backend_device, backend_params,
                        leaves, make, make_2d)
from tolerance import assert_close_to_oracle

from lam_fast.ops import adaln_modulate, gated_residual, vq_lookup
from lam_fast.ops.vq.reference import nearest_code_reference

KERNEL_BACKENDS = backend_params("cpp", "triton", "cuda")

# The custom ops of each backend, and the module that registers their fake and autograd rules.
OPS = {
    "cpp": ("lam_fast", "lam_fast.ops.adaln.cpp"),
    "cuda": ("lam_fast", "lam_fast.ops.adaln.cuda"),
    "triton": ("lam_fast_triton", "lam_fast.ops.adaln.triton"),
}


def nearest(x, codebook, backend):
    return vq_lookup(x, codebook, backend=backend).indices


# ---- AdaLN ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_identity_at_zero_modulation_and_gate(backend, dtype):
    """AdaLN-zero at init: zero shift/scale is plain LayerNorm, a zero gate returns x bit for bit."""
    device = backend_device(backend)
    g = torch.Generator().manual_seed(0)
    x = make(g, (2, 12, 40), dtype, "contiguous", device=device)
    zeros = torch.zeros(2, 3, 40, dtype=dtype, device=device)
    out = adaln_modulate(x, zeros, zeros, frame_tokens=4, eps=1e-6, backend=backend)
    layer_norm, layer_norm64 = (torch.nn.functional.layer_norm(v, (40,), eps=1e-6) for v in (x, x.double()))
    assert_close_to_oracle(out, layer_norm, layer_norm64, name="layer_norm")
    if dtype == torch.float32:  # and at fp32 within torch's default tolerance of the eager layer_norm
        torch.testing.assert_close(out, layer_norm)
    y = make(g, (2, 12, 40), dtype, "contiguous", device=device)
    assert torch.equal(gated_residual(x, y, zeros, frame_tokens=4, backend=backend), x)


# (b, t, n, c, dtype, layout): one token one channel, then frames and channels off the tile and
# vector widths (n = 70 > the C++ backward's 64-row chunk), in each dtype and memory layout.
FRAME_CASES = [
    (1, 1, 1, 1, torch.float32, "contiguous"),
    (2, 3, 7, 33, torch.bfloat16, "transposed"),
    (3, 2, 70, 65, torch.float16, "strided"),
    (2, 2, 17, 16, torch.float32, "strided"),
]


@pytest.mark.parametrize("op", ["adaln_modulate", "gated_residual"])
@pytest.mark.parametrize("shape", FRAME_CASES, ids=lambda c: "x".join(map(str, c[:4])) + f"-{c[4]}-{c[5]}")
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_frame_ops_match_oracle(backend, shape, op):
    """Output and input gradients against the reference in the same dtype and the fp64 oracle (the
    C++ and Triton backends' property tests draw many more cases in their own files)."""
    b, t, n, c, dtype, layout = shape
    case = {"seed": 11, "b": b, "t": t, "n": n, "c": c, "dtype": dtype, "layout": layout}
    assert_frame_op_matches_oracle(op, case, backend, device=backend_device(backend))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_adaln_opcheck(backend, dtype):
    """Schema, fake tensors and autograd registration of the backend's four AdaLN ops."""
    namespace, module = OPS[backend]
    importlib.import_module(module)
    ops = getattr(torch.ops, namespace)
    x, shift, scale = adaln_args(dtype, requires_grad=True, device=backend_device(backend))
    torch.library.opcheck(ops.adaln_modulate_fwd, (x, shift, scale, 5, 1e-6))
    torch.library.opcheck(ops.gated_residual_fwd, (x, x.detach() * 2, shift, 5))
    _, mean, rstd = ops.adaln_modulate_fwd(x.detach(), shift.detach(), scale.detach(), 5, 1e-6)
    grad = torch.randn_like(x.detach())
    torch.library.opcheck(ops.adaln_modulate_bwd, (grad, x.detach(), scale.detach(), mean, rstd, 5))
    torch.library.opcheck(ops.gated_residual_bwd, (grad, x.detach(), shift.detach(), 5))


# ---- VQ ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_vq_duplicate_codes_pick_the_first_copy(backend, dtype):
    device = backend_device(backend)
    g = torch.Generator().manual_seed(3)
    distinct = torch.randn(40, 24, generator=g).to(dtype)
    order = torch.randperm(80, generator=g)
    codebook = make_2d(torch.cat([distinct, distinct])[order], dtype, "contiguous", device)  # each code twice, shuffled
    first_copy = torch.full((40,), 80)
    first_copy.scatter_reduce_(0, torch.arange(80)[order] % 40, torch.arange(80), reduce="amin")
    x = make_2d(distinct.float() + 0.01 * torch.randn(40, 24, generator=g), dtype, "contiguous", device)
    got = nearest(x, codebook, backend)
    assert torch.equal(got.cpu(), first_copy)
    assert torch.equal(got, nearest_code_reference(x, codebook))
    distinct = make_2d(distinct, dtype, "contiguous", device)
    assert torch.equal(nearest(distinct, codebook, backend).cpu(), first_copy)  # distance exactly 0, twice


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_vq_idempotent_batch_invariant_in_range(backend):
    g = torch.Generator().manual_seed(6)
    x, codebook = (make_2d(torch.randn(n, 16, generator=g), torch.float32, "contiguous", backend_device(backend))
                   for n in (300, 50))
    idx = nearest(x, codebook, backend)
    assert int(idx.min()) >= 0 and int(idx.max()) < 50
    assert torch.equal(nearest(codebook[idx], codebook, backend), idx)  # quantising a code returns it
    for start, stop in [(0, 1), (7, 40), (123, 300)]:
        assert torch.equal(nearest(x[start:stop], codebook, backend), idx[start:stop])


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # Triton's interpreter's numpy on inf/NaN
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_vq_non_finite_and_huge_values_match_reference(backend):
    """Rows or codes the fp32 bound cannot cover go to float64; NaN distances win as in torch.argmin."""
    g = torch.Generator().manual_seed(7)
    x, codebook = (make_2d(torch.randn(n, 9, generator=g), torch.float32, "contiguous", backend_device(backend))
                   for n in (12, 20))
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    x[3, 5] = -float("inf")
    x[4] *= 1e25  # |x|^2 overflows fp32
    assert torch.equal(nearest(x, codebook, backend), nearest_code_reference(x, codebook))
    codebook[13, 2] = float("nan")
    assert torch.equal(nearest(x, codebook, backend), nearest_code_reference(x, codebook))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_vq_empty_inputs(backend):
    device = backend_device(backend)
    out = vq_lookup(torch.randn(0, 4, device=device), torch.randn(3, 4, device=device), backend=backend)
    assert out.indices.shape == (0,) and out.quantized.shape == (0, 4)
    got = nearest(torch.randn(5, 0, device=device), torch.randn(3, 0, device=device), backend)
    assert torch.equal(got.cpu(), torch.zeros(5, dtype=torch.int64))


# ---- all three ops -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_torch_compile_fullgraph(backend):
    """All three ops in one fullgraph compile (inductor, ~25 s cold on CPU; the kernels are opaque
    custom ops, Triton's run in the interpreter without a GPU): forward and backward match eager."""

    def step(x, shift, scale, codebook):
        h = adaln_modulate(x, shift, scale, frame_tokens=5, backend=backend)
        h = gated_residual(x, h, scale, frame_tokens=5, backend=backend)
        out = vq_lookup(h.flatten(0, 1), codebook, backend=backend)
        return h, out.indices, out.quantized.sum() + out.commitment_loss + out.codebook_loss

    device = backend_device(backend)
    codebook = make_2d(torch.randn(11, 19, generator=torch.Generator().manual_seed(2)), torch.float32, "contiguous",
                       device)
    eager_inputs = [*adaln_args(requires_grad=True, device=device), codebook.clone().requires_grad_()]
    compiled_inputs = [v.detach().clone().requires_grad_() for v in eager_inputs]
    h, idx, loss = torch.compile(step, fullgraph=True)(*compiled_inputs)
    (h.sum() + loss).backward()
    h_e, idx_e, loss_e = step(*eager_inputs)
    (h_e.sum() + loss_e).backward()
    torch.testing.assert_close(h, h_e)
    assert torch.equal(idx, idx_e)
    torch.testing.assert_close(loss, loss_e)
    for a, b in zip(compiled_inputs, eager_inputs):
        torch.testing.assert_close(a.grad, b.grad)


@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.sampled_from([1, 17, 70]),
    k=st.sampled_from([1, 5, 65]),
    d=st.sampled_from([1, 7, 33]),
    dtype=st.sampled_from(DTYPES),
    layout=st.sampled_from(LAYOUTS),
)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_vq_outputs_and_gradients_match_oracle(backend, seed, m, k, d, dtype, layout):
    """quantized, both losses, x.grad and codebook.grad against the reference path
    ``vq_losses(x, codebook, nearest_code_reference(x, codebook))`` and its fp64 oracle."""
    g, device = torch.Generator().manual_seed(seed), backend_device(backend)
    x = make_2d(torch.randn(m, d, generator=g), dtype, layout, device)
    codebook = make_2d(torch.randn(k, d, generator=g), dtype, layout, device)
    upstream = torch.randn(m, d, generator=g).to(device)
    weights = torch.rand(2, generator=g) + 0.5

    def run(backend, cast=None):
        inputs = leaves(x, codebook, dtype=cast)
        out = vq_lookup(*inputs, backend=backend)
        loss = (out.quantized * upstream.to(out.quantized.dtype)).sum()
        loss = loss + weights[0].item() * out.commitment_loss + weights[1].item() * out.codebook_loss
        return out, torch.autograd.grad(loss, inputs)

    out, grads = run(backend)
    ref, ref_grads = run("reference")
    oracle, oracle_grads = run("reference", torch.float64)
    assert torch.equal(out.indices, oracle.indices)
    assert torch.equal(out.quantized, codebook[out.indices])  # the forward value is the code itself
    for name in ("quantized", "commitment_loss", "codebook_loss"):
        assert_close_to_oracle(getattr(out, name), getattr(ref, name), getattr(oracle, name), name=name)
    for name, got, want, exact in zip(("x.grad", "codebook.grad"), grads, ref_grads, oracle_grads):
        assert_close_to_oracle(got, want, exact, name=name)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_vq_straight_through_and_separate_loss_gradients(backend):
    g, device = torch.Generator().manual_seed(0), backend_device(backend)
    x, codebook = leaves(*(make_2d(torch.randn(n, 4, generator=g), torch.float32, "contiguous", device) for n in (6, 5)))
    out = vq_lookup(x, codebook, backend=backend)
    upstream = make_2d(torch.randn(6, 4, generator=g), torch.float32, "contiguous", device)
    grad = functools.partial(torch.autograd.grad, inputs=(x, codebook), allow_unused=True, retain_graph=True)
    grad_x, grad_codebook = grad((out.quantized * upstream).sum())
    assert torch.equal(grad_x, upstream)  # straight through: identity gradient to x
    assert grad_codebook is None or torch.count_nonzero(grad_codebook) == 0
    grad_x, grad_codebook = grad(out.commitment_loss)
    assert grad_codebook is None or torch.count_nonzero(grad_codebook) == 0
    grad_x, grad_codebook = grad(out.codebook_loss)
    assert grad_x is None or torch.count_nonzero(grad_x) == 0
    unused = torch.ones(5, dtype=torch.bool, device=device)
    unused[out.indices] = False
    assert torch.count_nonzero(grad_codebook[unused]) == 0  # only chosen codes receive gradient

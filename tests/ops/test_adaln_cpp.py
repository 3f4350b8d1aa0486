"""The C++ backend of adaln_modulate / gated_residual against the reference and an fp64 oracle."""

import importlib.util

import pytest
import torch
from hypothesis import given
from cpp_support import simd
from hypothesis import strategies as st
from tolerance import assert_close_to_oracle

if importlib.util.find_spec("lam_fast._C") is None:
    pytest.skip("lam_fast._C is not built: run `pip install -e . --no-build-isolation`", allow_module_level=True)

import lam_fast._C as _C  # noqa: E402  (a built but broken extension must fail, not skip)
from lam_fast.ops import adaln_modulate, gated_residual, vq_lookup  # noqa: E402
from lam_fast.ops._dispatch import CALLS  # noqa: E402

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LAYOUTS = ("contiguous", "transposed", "strided")
FRAME_TOKENS = (1, 3, 7, 17, 33, 65, 70)  # 70 > the 64-row backward chunk
CHANNELS = (1, 3, 7, 16, 17, 31, 33, 64, 65)  # around the 4/8/16-lane vector widths


def make(g, shape, dtype, layout, *, mean=0.0, std=1.0):
    """Values from generator g, rounded to dtype, stored contiguous / transposed / strided."""
    if layout == "transposed":
        storage = (*shape[:-2], shape[-1], shape[-2])
    elif layout == "strided":
        storage = (*shape[:-1], 2 * shape[-1])
    else:
        storage = shape
    t = (torch.randn(storage, generator=g) * std + mean).to(dtype)
    if layout == "transposed":
        t = t.transpose(-1, -2)
    elif layout == "strided":
        t = t[..., ::2]
    assert t.shape == shape
    return t


frame_case = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "b": st.integers(1, 3),
        "t": st.integers(1, 3),
        "n": st.sampled_from(FRAME_TOKENS),
        "c": st.sampled_from(CHANNELS),
        "dtype": st.sampled_from(DTYPES),
        "layout": st.sampled_from(LAYOUTS),
        "capability": st.sampled_from(_C.cpu_capabilities()),
    }
)


def _leaves(*tensors, dtype=None):
    return [t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]


def _run(fn, inputs, grad_out, backend, **kw):
    out = fn(*inputs, backend=backend, **kw)
    grads = torch.autograd.grad(out, inputs, grad_out)
    return out, grads


@given(case=frame_case, eps=st.sampled_from([1e-6, 1e-3]))
def test_adaln_modulate_matches_oracle(case, eps):
    g = torch.Generator().manual_seed(case["seed"])
    b, t, n, c, dtype, layout = (case[k] for k in ("b", "t", "n", "c", "dtype", "layout"))
    x = make(g, (b, t * n, c), dtype, layout, mean=1.5, std=2.0)
    shift = make(g, (b, t, c), dtype, layout, std=0.5)
    scale = make(g, (b, t, c), dtype, layout, std=0.5)
    grad_out = make(g, (b, t * n, c), dtype, layout)
    kw = {"frame_tokens": n, "eps": eps}
    with simd(_C, case["capability"]):
        out, grads = _run(adaln_modulate, _leaves(x, shift, scale), grad_out, "cpp", **kw)
    ref, ref_grads = _run(adaln_modulate, _leaves(x, shift, scale), grad_out, "reference", **kw)
    oracle, oracle_grads = _run(
        adaln_modulate, _leaves(x, shift, scale, dtype=torch.float64), grad_out.double(), "reference", **kw
    )
    assert_close_to_oracle(out, ref, oracle, name="out")
    for name, got, want, exact in zip(("grad_x", "grad_shift", "grad_scale"), grads, ref_grads, oracle_grads):
        assert_close_to_oracle(got, want, exact, name=name)


@given(case=frame_case)
def test_gated_residual_matches_oracle(case):
    g = torch.Generator().manual_seed(case["seed"])
    b, t, n, c, dtype, layout = (case[k] for k in ("b", "t", "n", "c", "dtype", "layout"))
    x = make(g, (b, t * n, c), dtype, layout)
    y = make(g, (b, t * n, c), dtype, layout, std=3.0)
    gate = make(g, (b, t, c), dtype, layout, std=0.5)
    grad_out = make(g, (b, t * n, c), dtype, layout)
    kw = {"frame_tokens": n}
    with simd(_C, case["capability"]):
        out, grads = _run(gated_residual, _leaves(x, y, gate), grad_out, "cpp", **kw)
    ref, ref_grads = _run(gated_residual, _leaves(x, y, gate), grad_out, "reference", **kw)
    oracle, oracle_grads = _run(
        gated_residual, _leaves(x, y, gate, dtype=torch.float64), grad_out.double(), "reference", **kw
    )
    assert_close_to_oracle(out, ref, oracle, name="out")
    for name, got, want, exact in zip(("grad_x", "grad_y", "grad_gate"), grads, ref_grads, oracle_grads):
        assert_close_to_oracle(got, want, exact, name=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_invariance(dtype):
    """Each sample's outputs and per-frame gradients are bitwise the same alone or in a batch."""
    g = torch.Generator().manual_seed(0)
    b, t, n, c = 3, 2, 130, 33
    x, shift, scale = make(g, (b, t * n, c), dtype, "contiguous"), make(g, (b, t, c), dtype, "contiguous"), make(
        g, (b, t, c), dtype, "contiguous"
    )
    grad_out = make(g, (b, t * n, c), dtype, "contiguous")
    full_out, full_grads = _run(adaln_modulate, _leaves(x, shift, scale), grad_out, "cpp", frame_tokens=n, eps=1e-6)
    gated_out, gated_grads = _run(gated_residual, _leaves(x, x, shift), grad_out, "cpp", frame_tokens=n)
    for i in range(b):
        one = [v[i : i + 1] for v in (x, shift, scale)]
        out, grads = _run(adaln_modulate, _leaves(*one), grad_out[i : i + 1], "cpp", frame_tokens=n, eps=1e-6)
        assert torch.equal(out, full_out[i : i + 1])
        for got, want in zip(grads, full_grads):
            assert torch.equal(got, want[i : i + 1])
        out, grads = _run(gated_residual, _leaves(one[0], one[0], one[1]), grad_out[i : i + 1], "cpp", frame_tokens=n)
        assert torch.equal(out, gated_out[i : i + 1])
        for got, want in zip(grads, gated_grads):
            assert torch.equal(got, want[i : i + 1])


def test_identity_at_zero_modulation_and_gate():
    """AdaLN-zero at init: zero shift/scale is plain LayerNorm, a zero gate returns x unchanged."""
    x = torch.randn(2, 12, 40)
    zeros = torch.zeros(2, 3, 40)
    torch.testing.assert_close(
        adaln_modulate(x, zeros, zeros, frame_tokens=4, eps=1e-6, backend="cpp"),
        torch.nn.functional.layer_norm(x, (40,), eps=1e-6),
    )
    assert torch.equal(gated_residual(x, torch.randn_like(x), zeros, frame_tokens=4, backend="cpp"), x)


def _adaln_args(dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3 * 5, 19, generator=g).to(dtype)
    per_frame = [torch.randn(2, 3, 19, generator=g).to(dtype) for _ in range(2)]
    return [v.requires_grad_(requires_grad) for v in (x, *per_frame)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype):
    x, shift, scale = _adaln_args(dtype, requires_grad=True)
    ops = torch.ops.lam_fast
    torch.library.opcheck(ops.adaln_modulate_fwd, (x, shift, scale, 5, 1e-6))
    torch.library.opcheck(ops.gated_residual_fwd, (x, x.detach() * 2, shift, 5))
    _, mean, rstd = ops.adaln_modulate_fwd(x.detach(), shift.detach(), scale.detach(), 5, 1e-6)
    grad = torch.randn_like(x.detach())
    torch.library.opcheck(ops.adaln_modulate_bwd, (grad, x.detach(), scale.detach(), mean, rstd, 5))
    torch.library.opcheck(ops.gated_residual_bwd, (grad, x.detach(), shift.detach(), 5))


def test_cpp_backend_runs_its_own_kernels():
    x, shift, scale = _adaln_args(requires_grad=True)
    before_mod, before_gated = CALLS[("adaln_modulate", "cpp")], CALLS[("gated_residual", "cpp")]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        h = adaln_modulate(x, shift, scale, frame_tokens=5, backend="cpp")
        gated_residual(x, h, shift, frame_tokens=5, backend="cpp").sum().backward()
    assert CALLS[("adaln_modulate", "cpp")] == before_mod + 1
    assert CALLS[("gated_residual", "cpp")] == before_gated + 1
    names = {e.name for e in prof.events()}
    for op in ("adaln_modulate_fwd", "adaln_modulate_bwd", "gated_residual_fwd", "gated_residual_bwd"):
        assert f"lam_fast::{op}" in names, f"lam_fast::{op} missing from the profiler trace"
    assert "aten::native_layer_norm" not in names


def test_kernel_validation():
    x, shift, scale = _adaln_args()
    ops = torch.ops.lam_fast
    with pytest.raises(RuntimeError, match="shift must be"):
        ops.adaln_modulate_fwd(x, shift[:, :2], scale, 5, 1e-6)
    with pytest.raises(RuntimeError, match="frame_tokens"):
        ops.adaln_modulate_fwd(x, shift, scale, 4, 1e-6)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.gated_residual_fwd(x, x.double(), shift, 5)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        ops.gated_residual_fwd(x.double(), x.double(), shift.double(), 5)


def test_torch_compile_fullgraph():
    """One compile for all cpp ops (inductor on CPU, ~25 s cold): forward and backward match eager."""

    def step(x, shift, scale, codebook):
        h = adaln_modulate(x, shift, scale, frame_tokens=5, backend="cpp")
        h = gated_residual(x, h, scale, frame_tokens=5, backend="cpp")
        codes = vq_lookup(h.flatten(0, 1), codebook, backend="cpp")
        return h, codes.indices, codes.commitment_loss

    codebook = torch.randn(11, 19)
    eager_inputs = _adaln_args(requires_grad=True)
    compiled_inputs = [v.detach().clone().requires_grad_() for v in eager_inputs]
    h, idx, loss = torch.compile(step, fullgraph=True)(*compiled_inputs, codebook)
    (h.sum() + loss).backward()
    h_e, idx_e, loss_e = step(*eager_inputs, codebook)
    (h_e.sum() + loss_e).backward()
    torch.testing.assert_close(h, h_e)
    assert torch.equal(idx, idx_e)
    for a, b in zip(compiled_inputs, eager_inputs):
        torch.testing.assert_close(a.grad, b.grad)

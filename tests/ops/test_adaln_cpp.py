"""The C++ backend of adaln_modulate / gated_residual against the reference and an fp64 oracle.

The tests every kernel backend passes (identity at zero modulation, opcheck, torch.compile) are
in test_adaln_vq_backends.py; the C++-only ones are here."""

import functools
import importlib.util

import pytest
import torch
from cpp_support import simd
from hypothesis import given
from hypothesis import strategies as st
from op_support import DTYPES, adaln_args, assert_frame_op_matches_oracle, frame_cases, leaves, make, run_with_grads

if importlib.util.find_spec("lam_fast._C") is None:
    pytest.skip("lam_fast._C is not built: run `pip install -e . --no-build-isolation`", allow_module_level=True)

import lam_fast._C as _C  # noqa: E402  (a built but broken extension must fail, not skip)
from lam_fast.ops import adaln_modulate, gated_residual  # noqa: E402
from lam_fast.ops._dispatch import CALLS  # noqa: E402

FRAME_TOKENS = (1, 3, 7, 17, 33, 65, 70)  # 70 > the 64-row backward chunk
CHANNELS = (1, 3, 7, 16, 17, 31, 33, 64, 65)  # around the 4/8/16-lane vector widths

frame_case = frame_cases(
    frame_tokens=FRAME_TOKENS, channels=CHANNELS, max_batch=3, capability=st.sampled_from(_C.cpu_capabilities())
)


def _simd(case):
    return functools.partial(simd, _C, case["capability"])


@given(case=frame_case, eps=st.sampled_from([1e-6, 1e-3]))
def test_adaln_modulate_matches_oracle(case, eps):
    assert_frame_op_matches_oracle("adaln_modulate", case, "cpp", kernel_context=_simd(case), eps=eps)


@given(case=frame_case)
def test_gated_residual_matches_oracle(case):
    assert_frame_op_matches_oracle("gated_residual", case, "cpp", kernel_context=_simd(case))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_invariance(dtype):
    """Each sample's outputs and per-frame gradients are bitwise the same alone or in a batch."""
    g = torch.Generator().manual_seed(0)
    b, t, n, c = 3, 2, 130, 33
    x, shift, scale = make(g, (b, t * n, c), dtype, "contiguous"), make(g, (b, t, c), dtype, "contiguous"), make(
        g, (b, t, c), dtype, "contiguous"
    )
    grad_out = make(g, (b, t * n, c), dtype, "contiguous")
    modulate = functools.partial(run_with_grads, adaln_modulate, backend="cpp", frame_tokens=n, eps=1e-6)
    gated = functools.partial(run_with_grads, gated_residual, backend="cpp", frame_tokens=n)
    full_out, full_grads = modulate(leaves(x, shift, scale), grad_out)
    gated_out, gated_grads = gated(leaves(x, x, shift), grad_out)
    for i in range(b):
        one = [v[i : i + 1] for v in (x, shift, scale)]
        out, grads = modulate(leaves(*one), grad_out[i : i + 1])
        assert torch.equal(out, full_out[i : i + 1])
        for got, want in zip(grads, full_grads):
            assert torch.equal(got, want[i : i + 1])
        out, grads = gated(leaves(one[0], one[0], one[1]), grad_out[i : i + 1])
        assert torch.equal(out, gated_out[i : i + 1])
        for got, want in zip(grads, gated_grads):
            assert torch.equal(got, want[i : i + 1])


def test_cpp_backend_runs_its_own_kernels():
    x, shift, scale = adaln_args(requires_grad=True)
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
    x, shift, scale = adaln_args()
    ops = torch.ops.lam_fast
    with pytest.raises(RuntimeError, match="shift must be"):
        ops.adaln_modulate_fwd(x, shift[:, :2], scale, 5, 1e-6)
    with pytest.raises(RuntimeError, match="frame_tokens"):
        ops.adaln_modulate_fwd(x, shift, scale, 4, 1e-6)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.gated_residual_fwd(x, x.double(), shift, 5)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        ops.gated_residual_fwd(x.double(), x.double(), shift.double(), 5)

"""The C++ backend of the VQ nearest-code search: indices exactly equal to the reference.

The tests every kernel backend passes (duplicate codes, batch invariance, non-finite and empty
inputs) are in test_adaln_vq_backends.py; the C++-only ones are here."""

import importlib.util

import pytest
import torch
from cpp_support import simd
from hypothesis import given
from hypothesis import strategies as st
from op_support import DTYPES, LAYOUTS, make_2d

if importlib.util.find_spec("lam_fast._C") is None:
    pytest.skip("lam_fast._C is not built: run `pip install -e . --no-build-isolation`", allow_module_level=True)

import lam_fast._C as _C  # noqa: E402  (a built but broken extension must fail, not skip)
from lam_fast.ops import vq_lookup  # noqa: E402
from lam_fast.ops._dispatch import CALLS  # noqa: E402
from lam_fast.ops.vq.reference import nearest_code_reference  # noqa: E402


def nearest_cpp(x, codebook):
    return vq_lookup(x, codebook, backend="cpp").indices


@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.sampled_from([1, 3, 7, 17, 33, 65, 130]),
    k=st.sampled_from([1, 2, 3, 7, 31, 32, 33, 65, 257]),  # around the 32-code groups
    d=st.sampled_from([1, 3, 7, 16, 17, 33, 64, 65, 130]),
    dtype=st.sampled_from(DTYPES),
    layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS)),
    capability=st.sampled_from(_C.cpu_capabilities()),
)
def test_indices_equal_reference(seed, m, k, d, dtype, layouts, capability):
    g = torch.Generator().manual_seed(seed)
    x = make_2d(torch.randn(m, d, generator=g), dtype, layouts[0])
    codebook = make_2d(torch.randn(k, d, generator=g), dtype, layouts[1])
    with simd(_C, capability):
        got = nearest_cpp(x, codebook)
    assert got.dtype == torch.int64 and got.shape == (m,)
    assert torch.equal(got, nearest_code_reference(x, codebook))


@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(DTYPES), capability=st.sampled_from(_C.cpu_capabilities()))
def test_exact_ties_go_to_the_lowest_index(seed, dtype, capability):
    """Small integers: every distance is exact, ties abound; the answer is the first minimum."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (97, 5), generator=g)
    codebook = torch.randint(-2, 3, (70, 5), generator=g)
    exact = ((x[:, None, :] - codebook[None, :, :]) ** 2).sum(-1).argmin(1)  # int64: first minimum
    with simd(_C, capability):
        got = nearest_cpp(x.to(dtype), codebook.to(dtype))
    assert torch.equal(got, exact)
    assert torch.equal(got, nearest_code_reference(x.to(dtype), codebook.to(dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_many_rows_and_codes(dtype):
    """Several row tasks and code blocks, for every SIMD kernel set."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1500, 48, generator=g).to(dtype)
    codebook = torch.randn(1100, 48, generator=g).to(dtype)
    expected = nearest_code_reference(x, codebook)
    for capability in _C.cpu_capabilities():
        with simd(_C, capability):
            assert torch.equal(nearest_cpp(x, codebook), expected), capability


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_opcheck(dtype):
    g = torch.Generator().manual_seed(8)
    x, codebook = torch.randn(37, 20, generator=g).to(dtype), torch.randn(45, 20, generator=g).to(dtype)
    torch.library.opcheck(torch.ops.lam_fast.vq_nearest, (x, codebook))


def test_cpp_backend_runs_its_own_kernel():
    x, codebook = torch.randn(64, 8), torch.randn(10, 8)
    before = CALLS[("vq_lookup", "cpp")]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        vq_lookup(x, codebook, backend="cpp")
    assert CALLS[("vq_lookup", "cpp")] == before + 1
    names = {e.name for e in prof.events()}
    assert "lam_fast::vq_quantize" in names  # search, gather and losses in one C++ op
    assert not names & {"aten::argmin", "aten::index", "aten::mse_loss"}


def test_kernel_validation():
    op = torch.ops.lam_fast.vq_nearest
    with pytest.raises(RuntimeError, match="dtype"):
        op(torch.randn(4, 3), torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        op(torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"\(M, D\)"):
        op(torch.randn(4, 3), torch.randn(5, 4))
    with pytest.raises(RuntimeError, match="empty"):
        op(torch.randn(4, 3), torch.randn(0, 3))

"""The C++ backend of frame-causal attention (csrc/attention.cpp) against the reference.

Frame causality, checked for every backend, is in test_attention.py."""

import importlib.util

import pytest
import torch
from cpp_support import attention_gemm, simd
from hypothesis import given, settings
from hypothesis import strategies as st
from op_support import assert_attention_matches_reference, out_and_grads, rollout
from tolerance import assert_close_to_oracle

if importlib.util.find_spec("lam_fast._C") is None:
    pytest.skip("lam_fast._C is not built: run `pip install -e . --no-build-isolation`", allow_module_level=True)

import lam_fast._C as _C  # noqa: E402  (a built but broken extension must fail, not skip)
from lam_fast.ops import KVCache, Rope3D, frame_causal_attention  # noqa: E402
from lam_fast.ops._dispatch import CALLS  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
GEMMS = ["blas", "portable"] if _C.attention_gemm() == "blas" else ["portable"]


def _inputs(seed, b, h, lq, lk, d, *, layout):
    g = torch.Generator().manual_seed(seed)
    out = []
    for length in (lq, lk, lk):
        if layout == "bhld":
            x = torch.randn(b, h, length, d, generator=g, dtype=torch.float64)
        elif layout == "blhd":  # fused qkv projection layout, viewed as (B, H, L, D)
            x = torch.randn(b, length, h, d, generator=g, dtype=torch.float64).transpose(1, 2)
        else:  # every other element of a wider last dim: stride(-1) = 2
            x = torch.randn(b, h, length, 2 * d, generator=g, dtype=torch.float64)[..., ::2]
        out.append(x)
    return out


def _run(backend, dtype, q64, k64, v64, grad, *, n, rope, offset):
    """Output and (dq, dk, dv) of one backend; a KV cache prefilled with `offset` frames of k/v."""

    def attend(q, k, v):
        if not offset:
            return frame_causal_attention(q, k, v, frame_tokens=n, rope=rope, backend=backend)
        cache = KVCache()
        cache.append(k[:, :, : offset * n], v[:, :, : offset * n], n)
        return frame_causal_attention(q, k[:, :, offset * n :], v[:, :, offset * n :], frame_tokens=n, rope=rope,
                                      kv_cache=cache, backend=backend)

    return out_and_grads(attend, q64, k64, v64, grad, dtype)


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 2),
    h=st.integers(1, 3),
    t=st.integers(1, 4),
    offset=st.sampled_from([0, 0, 1, 2]),
    # frames straddling the 128-row query tiles and 512-key blocks, odd primes
    n=st.sampled_from([1, 3, 7, 17, 131]),
    d=st.sampled_from([6, 8, 12, 32, 64]),
    dtype=st.sampled_from(DTYPES),
    use_rope=st.booleans(),
    layout=st.sampled_from(["bhld", "blhd", "strided"]),
    capability=st.sampled_from(_C.cpu_capabilities()),
    gemm_name=st.sampled_from(GEMMS),
)
def test_matches_reference(seed, b, h, t, offset, n, d, dtype, use_rope, layout, capability, gemm_name):
    if n == 131:
        t = min(t, 5 - offset)  # up to 5 frames of 131 tokens: key blocks of 512 cut through frames
    q64, k64, v64 = _inputs(seed, b, h, t * n, (offset + t) * n, d, layout=layout)
    rope = Rope3D(d, (1, n)) if use_rope else None
    grad = torch.randn(q64.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    oracle = _run("reference", torch.float64, q64, k64, v64, grad, n=n, rope=rope, offset=offset)
    ref = _run("reference", dtype, q64, k64, v64, grad, n=n, rope=rope, offset=offset)
    with simd(_C, capability), attention_gemm(_C, gemm_name):
        got = _run("cpp", dtype, q64, k64, v64, grad, n=n, rope=rope, offset=offset)
    assert_attention_matches_reference(got, ref, oracle, d)


@pytest.mark.parametrize("gemm_name", GEMMS)
@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1], [2, 3]])
def test_kv_cache_equals_full_recompute(chunks, gemm_name):
    """Query tiles hold one frame and see the same key blocks either way, so every tile GEMM has the
    same M, N, K in the rollout as in the full computation; its leading dimensions (the score tile's
    row stride is min(512, Lk)) and buffer addresses differ. The portable loop's summation order
    depends on K alone: bit-identical. A BLAS may choose its kernel by leading dimension and
    alignment (MKL's sgemm does, on some shapes): the tolerance rule, against the fp64 oracle."""
    n, d = 20, 12
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 5 * n, d, generator=g) for _ in range(3))
    rope = Rope3D(d, (4, 5))
    with attention_gemm(_C, gemm_name):
        full = frame_causal_attention(q, k, v, frame_tokens=n, rope=rope, backend="cpp")
        cached = rollout(q, k, v, chunks, KVCache(max_frames=5), frame_tokens=n, rope=rope, backend="cpp")
    if gemm_name == "portable":
        assert torch.equal(cached, full)
    else:
        ref, oracle = (frame_causal_attention(q.to(dt), k.to(dt), v.to(dt), frame_tokens=n, rope=rope,
                                              backend="reference") for dt in (torch.float32, torch.float64))
        assert_close_to_oracle(full, ref, oracle, name="full")
        assert_close_to_oracle(cached, ref, oracle, name="cached")


def test_backward_does_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 3, 3 * 50, 16, generator=g, requires_grad=True) for _ in range(3))
    grad = torch.randn(q.shape, generator=g)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            out = frame_causal_attention(q, k, v, frame_tokens=50, backend="cpp")
            results.append([out, *torch.autograd.grad(out, (q, k, v), grad)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_really_runs_the_cpp_kernel():
    q = torch.randn(1, 1, 8, 8)
    before = CALLS[("frame_causal_attention", "cpp")]
    with torch.profiler.profile() as prof:
        frame_causal_attention(q, q, q, frame_tokens=4, backend="cpp")
    assert CALLS[("frame_causal_attention", "cpp")] == before + 1
    assert any(e.name == "lam_fast::attention_fwd" for e in prof.events())


def test_auto_picks_cpp_on_cpu():
    from lam_fast.ops import auto_backend

    assert auto_backend("frame_causal_attention", "cpu") == "cpp"


def test_bad_inputs_raise_with_the_reason():
    q = torch.randn(1, 2, 8, 8)
    with pytest.raises(RuntimeError, match="frame_tokens"):
        torch.ops.lam_fast.attention_fwd(q, q, q, None, None, 3, 0, 1.0)
    with pytest.raises(RuntimeError, match="cos/sin"):
        torch.ops.lam_fast.attention_fwd(q, q, q, torch.zeros(8, 3), torch.zeros(8, 3), 4, 0, 1.0)
    with pytest.raises(RuntimeError, match="both cos and sin"):
        torch.ops.lam_fast.attention_fwd(q, q, q, torch.zeros(8, 4), None, 4, 0, 1.0)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        torch.ops.lam_fast.attention_fwd(q.double(), q.double(), q.double(), None, None, 4, 0, 1.0)
    with pytest.raises(ValueError, match="unknown or not available"):
        _C.set_attention_gemm("cublas")


def test_float64_goes_to_the_reference_under_auto():
    """The fused kernels take fp32/bf16/fp16: auto routes float64 past them (to SDPA, or the
    reference), an explicit request says why it cannot run."""
    from lam_fast.ops import BackendUnavailable, adaln_modulate, auto_backend, vq_lookup

    assert auto_backend("frame_causal_attention", "cpu", torch.float64) == "sdpa"
    assert auto_backend("adaln_modulate", "cpu", torch.float64) == "reference"
    q = torch.randn(1, 1, 4, 8, dtype=torch.float64)
    ref = frame_causal_attention(q, q, q, frame_tokens=2, backend="reference")
    torch.testing.assert_close(frame_causal_attention(q, q, q, frame_tokens=2), ref)
    with pytest.raises(BackendUnavailable, match="not float64"):
        frame_causal_attention(q, q, q, frame_tokens=2, backend="cpp")
    x, mod = torch.randn(1, 4, 8, dtype=torch.float64), torch.zeros(1, 2, 8, dtype=torch.float64)
    assert adaln_modulate(x, mod, mod, frame_tokens=2).dtype == torch.float64
    assert vq_lookup(x[0], x[0]).indices.tolist() == [0, 1, 2, 3]

"""frame_causal_attention[triton] (kernels/lam_fast_kernels/attention.py + lam_fast/ops/attention/triton.py) vs the reference.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), one program at a time, so the shapes are small; the interpreter's default tiles
are 16 x 16, and the launcher tests below also run the GPU tile sizes. With a GPU the same tests run
on CUDA tensors with the compiled kernels. Frame causality, checked for every backend, is in
test_attention.py.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_support import TRITON_DEVICE, assert_attention_backend_matches_reference, assert_attention_matches_reference
from op_support import out_and_grads, rollout
from tolerance import assert_close_to_oracle

pytest.importorskip("triton", reason="triton is not installed (the [gpu] extra): no Triton backend to test")

from lam_fast._kernels import attention as kernels  # noqa: E402
from lam_fast.ops import BackendUnavailable, KVCache, Rope3D, frame_causal_attention  # noqa: E402
from lam_fast.ops._dispatch import CALLS  # noqa: E402
from lam_fast.ops.attention.reference import attention_reference  # noqa: E402
from lam_fast.ops.attention.triton import attention_triton  # noqa: E402

DEVICE = TRITON_DEVICE
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (h, w) frame grids; N = h * w in {1, 3, 6, 7, 17}: odd primes straddle every tile edge, and both
# orientations put the in-frame position on the RoPE h or w axis
GRIDS = [(1, 1), (1, 3), (3, 1), (2, 3), (3, 2), (1, 7), (7, 1), (1, 17), (17, 1)]
HEAD_DIMS = [6, 8, 14, 32, 64]  # 6: the RoPE minimum; 14: D/2 = 7 is odd and not a multiple of 3


def _randn(g, shape, noncontiguous):
    """float64 (B, H, L, D) values; noncontiguous: stored (B, L, H, D) like a fused qkv projection's."""
    b, h, length, d = shape
    if noncontiguous:
        return torch.randn((b, length, h, d), generator=g, dtype=torch.float64).transpose(1, 2).to(DEVICE)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(DEVICE)


def _problem(seed, b, h, q_frames, cached_frames, n, d, noncontiguous):
    """q64: (B, H, q_frames*N, D); k64, v64: (B, H, (cached_frames + q_frames)*N, D); grad64 like q64."""
    g = torch.Generator().manual_seed(seed)
    lq, lk = q_frames * n, (cached_frames + q_frames) * n
    q64 = _randn(g, (b, h, lq, d), noncontiguous)
    k64, v64 = (_randn(g, (b, h, lk, d), noncontiguous) for _ in range(2))
    grad64 = _randn(g, (b, h, lq, d), noncontiguous)
    return q64, k64, v64, grad64


# drawn by both property tests
PROBLEM = dict(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(1, 2),
    grid=st.sampled_from(GRIDS),
    d=st.sampled_from(HEAD_DIMS),
    dtype=st.sampled_from(DTYPES),
    use_rope=st.booleans(),
)


@settings(max_examples=30)
@given(**PROBLEM, b=st.integers(1, 2), t=st.integers(1, 4), noncontiguous=st.booleans())
def test_triton_matches_reference(seed, b, h, t, grid, d, dtype, use_rope, noncontiguous):
    n = grid[0] * grid[1]
    q64, k64, v64, grad64 = _problem(seed, b, h, t, 0, n, d, noncontiguous)
    rope = Rope3D(d, grid) if use_rope else None
    assert_attention_backend_matches_reference("triton", dtype, q64, k64, v64, grad64, frame_tokens=n, rope=rope)


@settings(max_examples=15)
@given(**PROBLEM, t=st.integers(1, 3), cached=st.integers(1, 4))
def test_triton_with_cached_frames_matches_reference(seed, h, t, cached, grid, d, dtype, use_rope):
    """q holds frames [cached, cached + t), k and v frames [0, cached + t) (Lk > Lq): the KV-cache
    path of the kernels, gradients included."""
    n = grid[0] * grid[1]
    q64, k64, v64, grad64 = _problem(seed, 1, h, t, cached, n, d, noncontiguous=False)
    rope = Rope3D(d, grid) if use_rope else None
    args = dict(frame_tokens=n, rope=rope, scale=1 / math.sqrt(d), q_frame_offset=cached)

    def run(fn, dt):
        return out_and_grads(lambda q, k, v: fn(q, k, v, **args), q64, k64, v64, grad64, dt)

    oracle = run(attention_reference, torch.float64)
    assert_attention_matches_reference(run(attention_triton, dtype), run(attention_reference, dtype), oracle, d)


@pytest.mark.parametrize("d", [1, 5, 17])
@pytest.mark.parametrize("dtype", DTYPES)
def test_odd_head_dims_without_rope(d, dtype):
    """Without RoPE the public op takes any D: the halves are then ceil(D/2) and floor(D/2) wide."""
    n = 3
    q64, k64, v64, grad64 = _problem(d, 2, 1, 3, 0, n, d, noncontiguous=True)
    assert_attention_backend_matches_reference("triton", dtype, q64, k64, v64, grad64, frame_tokens=n)


def _launch(q, k, v, grad, *, frame_tokens, rope, offset, blocks):
    """The launchers directly (no autograd): [out, dq, dk, dv]."""
    scale = 1 / math.sqrt(q.shape[-1])
    rope_args = dict(inv_freq=None, grid_w=1) if rope is None else dict(inv_freq=rope.inv_freq.to(q.device),
                                                                         grid_w=rope.grid[1])
    common = dict(frame_tokens=frame_tokens, scale=scale, q_frame_offset=offset, blocks=blocks, **rope_args)
    out, lse = kernels.attention_fwd(q, k, v, **common)
    return [out, *kernels.attention_bwd(grad, q, k, v, out, lse, **common)]


@pytest.mark.parametrize(("blocks", "n"), [((16, 32), 13), ((32, 16), 13), ((64, 64), 13), ((128, 64), 29)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_launchers_with_gpu_tile_sizes(blocks, n, dtype):
    """The GPU's tile sizes (and unequal ones) on problems that cross their edges: 2 cached + 5 new
    frames of n tokens (n = 13: Lq = 65, Lk = 91; n = 29: Lq = 145, Lk = 203)."""
    d, cached = 48, 2
    q64, k64, v64, grad64 = _problem(7, 1, 2, 5, cached, n, d, noncontiguous=True)
    rope = Rope3D(d, (1, n))
    ref_args = dict(frame_tokens=n, rope=rope, scale=1 / math.sqrt(d), q_frame_offset=cached)

    def reference(dt):
        return out_and_grads(lambda q, k, v: attention_reference(q, k, v, **ref_args), q64, k64, v64, grad64, dt)

    got = _launch(*(x.to(dtype) for x in (q64, k64, v64, grad64)), frame_tokens=n, rope=rope, offset=cached,
                  blocks=kernels.Blocks(*blocks))
    assert_attention_matches_reference(got, reference(dtype), reference(torch.float64), d)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy, on the NaN rows
def test_invisible_tiles_are_never_read():
    """With frames of exactly one 16-token tile, a query tile never loads the keys of later frames
    and a key tile never loads the queries of earlier frames: NaNs there cannot reach the results
    (a masked-but-visited tile would turn them into NaN through 0 * NaN)."""
    n, t, cut = 16, 4, 2
    q, k, v, grad = (x.float() for x in _problem(1, 1, 2, t, 0, n, 32, noncontiguous=False))
    late, early = slice(cut * n, None), slice(None, cut * n)
    launch = dict(frame_tokens=n, rope=Rope3D(32, (4, 4)), offset=0, blocks=kernels.Blocks(16, 16))
    clean = _launch(q, k, v, grad, **launch)

    k2, v2 = k.clone(), v.clone()
    k2[:, :, late], v2[:, :, late] = float("nan"), float("nan")
    out, dq, _, _ = _launch(q, k2, v2, grad, **launch)
    assert torch.equal(out[:, :, early], clean[0][:, :, early])
    assert torch.equal(dq[:, :, early], clean[1][:, :, early])

    q2, grad2 = q.clone(), grad.clone()
    q2[:, :, early], grad2[:, :, early] = float("nan"), float("nan")
    _, _, dk, dv = _launch(q2, k, v, grad2, **launch)
    assert torch.equal(dk[:, :, late], clean[2][:, :, late])
    assert torch.equal(dv[:, :, late], clean[3][:, :, late])


@pytest.mark.parametrize("max_frames", [None, 7])
@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1, 1], [2, 1, 3], [6]])
def test_kv_cache_equals_full_recompute(max_frames, chunks):
    """Frame-by-frame rollout through a KVCache (keys strided by max_frames when preallocated) equals
    the full computation, within the tolerance rule (tiles differ, so summation order does too)."""
    n, d = 5, 12
    q64, k64, v64, _ = _problem(2, 2, 2, 6, 0, n, d, noncontiguous=False)
    rope = Rope3D(d, (1, n))
    full = {dt: frame_causal_attention(q64.to(dt), k64.to(dt), v64.to(dt), frame_tokens=n, rope=rope,
                                       backend="reference") for dt in (torch.float32, torch.float64)}
    q, k, v = (x.float() for x in (q64, k64, v64))
    cache = KVCache(max_frames)
    cached = rollout(q, k, v, chunks, cache, frame_tokens=n, rope=rope, backend="triton")
    assert_close_to_oracle(cached, full[torch.float32], full[torch.float64], name="out")
    assert cache.num_frames == 6


def test_triton_backend_runs_its_kernels():
    q = torch.randn(1, 2, 12, 8, device=DEVICE, requires_grad=True)
    calls = CALLS[("frame_causal_attention", "triton")]
    launches = kernels.LAUNCHES.copy()
    frame_causal_attention(q, q, q, frame_tokens=4, rope=Rope3D(8, (2, 2)), backend="triton").sum().backward()
    assert CALLS[("frame_causal_attention", "triton")] == calls + 1
    for name in ("attn_fwd", "attn_bwd_dq", "attn_bwd_dkdv"):
        assert kernels.LAUNCHES[name] == launches[name] + 1, name


def test_opcheck():
    """Schema, fake tensors and autograd registration of the two custom ops."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 9, 8, generator=g).to(DEVICE).requires_grad_() for _ in range(3))
    inv_freq = Rope3D(8, (1, 3)).inv_freq.to(DEVICE)
    scalars = (3, 3, 0.3, 0)  # frame_tokens, grid_w, scale, q_frame_offset
    torch.library.opcheck(torch.ops.lam_fast_triton.attention_fwd.default, (q, k, v, inv_freq, *scalars))
    q, k, v = (x.detach() for x in (q, k, v))
    out, lse = torch.ops.lam_fast_triton.attention_fwd(q, k, v, None, *scalars)
    grad = torch.randn(out.shape, generator=g).to(DEVICE)
    torch.library.opcheck(torch.ops.lam_fast_triton.attention_bwd.default, (grad, q, k, v, out, lse, None, *scalars))


def test_torch_compile_fullgraph():
    """The custom ops trace (inductor calls the kernels as opaque ops; on CPU, the interpreter runs
    them): forward and backward match eager."""
    rope = Rope3D(8, (1, 3))

    def step(q, k, v):
        return frame_causal_attention(q, k, v, frame_tokens=3, rope=rope, backend="triton")

    g = torch.Generator().manual_seed(4)
    eager_inputs = [torch.randn(1, 2, 9, 8, generator=g).to(DEVICE).requires_grad_() for _ in range(3)]
    compiled_inputs = [x.detach().clone().requires_grad_() for x in eager_inputs]
    launches = kernels.LAUNCHES["attn_fwd"]
    out = torch.compile(step, fullgraph=True)(*compiled_inputs)
    out.sum().backward()
    assert kernels.LAUNCHES["attn_fwd"] > launches
    out_e = step(*eager_inputs)
    out_e.sum().backward()
    torch.testing.assert_close(out, out_e)
    for a, e in zip(compiled_inputs, eager_inputs):
        torch.testing.assert_close(a.grad, e.grad)


def test_launcher_validation():
    q = torch.randn(1, 1, 8, 8, device=DEVICE)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        kernels.attention_fwd(q.double(), q.double(), q.double(), frame_tokens=4, scale=1.0)
    with pytest.raises(ValueError, match="powers of two >= 16"):
        kernels.attention_fwd(q, q, q, frame_tokens=4, scale=1.0, blocks=kernels.Blocks(8, 16))
    with pytest.raises(ValueError, match="inv_freq"):
        kernels.attention_fwd(q, q, q, frame_tokens=4, scale=1.0, inv_freq=torch.ones(3, device=DEVICE))
    with pytest.raises(BackendUnavailable, match="not float64"):  # the dispatcher knows the kernel dtypes
        frame_causal_attention(q.double(), q.double(), q.double(), frame_tokens=4, backend="triton")


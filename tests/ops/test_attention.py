"""frame_causal_attention: backends vs the reference, causality, KV cache, RoPE, validation."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from op_support import assert_attention_backend_matches_reference, backend_device, backend_params, rollout

from lam_fast import ops
from lam_fast.ops import BackendUnavailable, KVCache, Rope3D, frame_causal_attention

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _inputs(seed, b, h, t, n, d, dtype, *, noncontiguous=False):
    g = torch.Generator().manual_seed(seed)
    shape = (b, t * n, h, d) if noncontiguous else (b, h, t * n, d)
    q, k, v = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    if noncontiguous:  # (B, L, H, D) storage viewed as (B, H, L, D), as a fused qkv projection yields
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    return q, k, v


@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 2),
    h=st.integers(1, 3),
    t=st.integers(1, 4),
    n=st.sampled_from([1, 3, 4, 7]),
    d=st.sampled_from([6, 8, 12, 32]),
    dtype=st.sampled_from(DTYPES),
    use_rope=st.booleans(),
    noncontiguous=st.booleans(),
)
def test_sdpa_matches_reference(seed, b, h, t, n, d, dtype, use_rope, noncontiguous):
    q64, k64, v64 = _inputs(seed, b, h, t, n, d, dtype, noncontiguous=noncontiguous)
    rope = Rope3D(d, (1, n)) if use_rope else None
    g = torch.Generator().manual_seed(seed + 1)
    grad = torch.randn(q64.shape, generator=g, dtype=torch.float64)
    assert_attention_backend_matches_reference("sdpa", dtype, q64, k64, v64, grad, frame_tokens=n, rope=rope)


# (b, h, t, n, d): a small problem for every backend, and for each kernel frames that straddle its tiles
CAUSALITY_SMALL = (2, 2, 4, 5, 12)
CAUSALITY_TILE_EDGES = {
    "cpp": (2, 2, 4, 37, 16),  # 128-row query tiles
    "triton": (2, 2, 5, 7, 32),  # the 16 x 16 tiles of Triton's interpreter
}
CAUSALITY_CASES = [
    pytest.param(backend.values[0], shape, id=f"{backend.id}-{'x'.join(map(str, shape))}", marks=backend.marks)
    for backend in backend_params("reference", "sdpa", "cpp", "triton")
    for shape in (CAUSALITY_SMALL, CAUSALITY_TILE_EDGES.get(backend.values[0]))
    if shape is not None
]


@pytest.mark.parametrize(("backend", "shape"), CAUSALITY_CASES)
def test_frame_causality(backend, shape):
    """Perturbing frames >= t leaves the outputs of frames < t bit-identical (tiles straddle frames)."""
    b, h, t, n, d = shape
    q, k, v = (x.float().to(backend_device(backend)) for x in _inputs(0, b, h, t, n, d, torch.float32))
    rope = Rope3D(d, (1, n))
    base = frame_causal_attention(q, k, v, frame_tokens=n, rope=rope, backend=backend)
    for cut in range(1, t):
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, :, cut * n :] += 3.0
        out = frame_causal_attention(q2, k2, v2, frame_tokens=n, rope=rope, backend=backend)
        assert torch.equal(out[:, :, : cut * n], base[:, :, : cut * n])
        assert not torch.allclose(out[:, :, cut * n :], base[:, :, cut * n :])


def test_tokens_within_a_frame_see_each_other():
    q, k, v = (x.float() for x in _inputs(1, 1, 1, 2, 4, 8, torch.float32))
    base = frame_causal_attention(q, k, v, frame_tokens=4, backend="reference")
    v2 = v.clone()
    v2[:, :, 3] += 1.0  # last token of frame 0 changes what token 0 of frame 0 sees
    out = frame_causal_attention(q, k, v2, frame_tokens=4, backend="reference")
    assert not torch.allclose(out[:, :, 0], base[:, :, 0])


@pytest.mark.parametrize("max_frames", [None, 6])
@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1, 1], [2, 1, 3], [6]])
@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_kv_cache_equals_full_recompute(max_frames, chunks, backend):
    n, d = 4, 12
    q, k, v = (x.float() for x in _inputs(2, 2, 2, 6, n, d, torch.float32))
    rope = Rope3D(d, (2, 2))
    full = frame_causal_attention(q, k, v, frame_tokens=n, rope=rope, backend=backend)
    cache = KVCache(max_frames)
    cached = rollout(q, k, v, chunks, cache, frame_tokens=n, rope=rope, backend=backend)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-6)
    assert cache.num_frames == 6


def test_kv_cache_overflow_and_mismatch_raise():
    q = torch.randn(1, 1, 4, 8)
    cache = KVCache(max_frames=1)
    frame_causal_attention(q, q, q, frame_tokens=4, kv_cache=cache)
    with pytest.raises(ValueError, match="full"):
        frame_causal_attention(q, q, q, frame_tokens=4, kv_cache=cache)
    with pytest.raises(ValueError, match="tokens per frame"):
        frame_causal_attention(q, q, q, frame_tokens=2, kv_cache=cache)


def test_rope_scores_depend_on_relative_time_only():
    d = 12
    rope = Rope3D(d, (1, 1))
    g = torch.Generator().manual_seed(3)
    qv, kv = torch.randn(d, generator=g), torch.randn(d, generator=g)
    seq = lambda x, t: x.expand(t, d).reshape(1, 1, t, d)  # noqa: E731
    rq, rk = rope.rotate(seq(qv, 8)), rope.rotate(seq(kv, 8))
    scores = (rq @ rk.transpose(-1, -2))[0, 0]
    for offset in range(-3, 4):  # scores[i, i + offset] must not depend on i
        diag = torch.diagonal(scores, offset=offset)
        torch.testing.assert_close(diag, diag[0].expand_as(diag), rtol=1e-5, atol=1e-5)
    assert rope.rotate(seq(qv, 1)).equal(seq(qv, 1))  # position (0, 0, 0) is the identity


def test_rope_offset_matches_position():
    rope = Rope3D(12, (2, 3))
    x = torch.randn(1, 2, 4 * 6, 12)
    full = rope.rotate(x)
    torch.testing.assert_close(rope.rotate(x[:, :, 12:], frame_offset=2), full[:, :, 12:])


def test_validation_and_backend_errors():
    q = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="frame_tokens"):
        frame_causal_attention(q, q, q, frame_tokens=3)
    with pytest.raises(ValueError, match="equal shapes"):
        frame_causal_attention(q, q[:, :1], q, frame_tokens=4)
    with pytest.raises(TypeError, match="dtype"):
        frame_causal_attention(q, q.double(), q, frame_tokens=4)
    with pytest.raises(ValueError, match="rope"):
        frame_causal_attention(q, q, q, frame_tokens=4, rope=Rope3D(8, (1, 2)))
    with pytest.raises(BackendUnavailable, match="no backend 'nope'"):
        frame_causal_attention(q, q, q, frame_tokens=4, backend="nope")
    assert ops.auto_backend("frame_causal_attention", "cpu") in ops.backend_status("frame_causal_attention")

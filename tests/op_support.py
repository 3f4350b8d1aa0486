"""Shared by the op tests of every backend (reference, sdpa, C++, Triton): which backends can run
here and where their tensors live, input makers, and the forward/backward runs compared with the
reference and its fp64 oracle under the one tolerance rule (tolerance.py)."""

from __future__ import annotations

import contextlib
import importlib.util

import pytest
import torch
from hypothesis import strategies as st
from tolerance import assert_close_to_oracle

from lam_fast.ops import adaln_modulate, frame_causal_attention, gated_residual

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LAYOUTS = ("contiguous", "transposed", "strided")

# ---- backends ------------------------------------------------------------------------------------

#: Where the Triton tests put their tensors: on the GPU, or without one on CPU under Triton's
#: interpreter (conftest.py sets TRITON_INTERPRET=1).
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# The module a backend needs and why its tests skip without it. Only a missing module skips: a
# built but broken extension must fail, not skip.
_NEEDS = {
    "cpp": ("lam_fast._C", "lam_fast._C is not built: run `pip install -e . --no-build-isolation`"),
    "cuda": ("lam_fast._C", "lam_fast._C is not built: run `pip install -e . --no-build-isolation`"),
    "triton": ("triton", "triton is not installed (the [gpu] extra): no Triton backend to test"),
}

#: Backends whose tests need a CUDA device: marked ``gpu`` (deselected by ``make test``, run by
#: ``make gpu-check``) and skipped with the reason where there is no device. Without the device a
#: CUDA build cannot be told from a CPU one, so only then is it a skip; on a GPU machine an extension
#: built without its CUDA kernels fails the tests (BackendUnavailable), as a broken one does.
_GPU_ONLY = {"cuda": "no CUDA device here: the CUDA kernels are tested on a GPU machine (`make gpu-check`)"}


def backend_device(backend: str) -> str:
    """The device a backend's tests run on: Triton's (see TRITON_DEVICE), CUDA for ``cuda``, CPU for the others."""
    if backend == "cuda":
        return "cuda"
    return TRITON_DEVICE if backend == "triton" else "cpu"


def backend_params(*backends: str) -> list:
    """One ``pytest.param`` per backend (id = its name), skipped with the reason where its module or
    device is missing; ``cuda`` carries the ``gpu`` mark."""
    params = []
    for name in backends:
        module, reason = _NEEDS.get(name, (None, ""))
        marks = [pytest.mark.gpu] if name in _GPU_ONLY else []
        if module is not None and importlib.util.find_spec(module) is None:
            marks.append(pytest.mark.skip(reason=reason))
        elif name in _GPU_ONLY and not torch.cuda.is_available():
            marks.append(pytest.mark.skip(reason=_GPU_ONLY[name]))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


# ---- inputs --------------------------------------------------------------------------------------


def make(g, shape, dtype, layout, *, mean=0.0, std=1.0, device="cpu"):
    """Values from generator g, rounded to dtype, on device, stored contiguous / transposed / strided."""
    if layout == "transposed":
        storage = (*shape[:-2], shape[-1], shape[-2])
    elif layout == "strided":
        storage = (*shape[:-1], 2 * shape[-1])
    else:
        storage = shape
    t = (torch.randn(storage, generator=g) * std + mean).to(device, dtype)
    if layout == "transposed":
        t = t.transpose(-1, -2)
    elif layout == "strided":
        t = t[..., ::2]
    assert t.shape == shape
    return t


def make_2d(values: torch.Tensor, dtype, layout, device="cpu"):
    """`values` rounded to dtype, on device, stored contiguous / transposed / strided."""
    values = values.to(device, dtype)
    if layout == "transposed":
        return values.T.contiguous().T
    if layout == "strided":
        wide = torch.zeros(values.shape[0], 2 * values.shape[1], dtype=dtype, device=device)
        wide[:, ::2] = values
        return wide[:, ::2]
    return values


def adaln_args(dtype=torch.float32, requires_grad=False, device="cpu"):
    """Small fixed x (2, 3*5, 19) and two per-frame (2, 3, 19) tensors (shift/scale or gate)."""
    g = torch.Generator().manual_seed(1)
    x = make(g, (2, 3 * 5, 19), dtype, "contiguous", device=device)
    per_frame = [make(g, (2, 3, 19), dtype, "contiguous", device=device) for _ in range(2)]
    return [v.requires_grad_(requires_grad) for v in (x, *per_frame)]


# ---- AdaLN: a backend against the reference and the fp64 oracle ----------------------------------


def leaves(*tensors, dtype=None):
    return [t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]


def run_with_grads(fn, inputs, grad_out, backend, **kw):
    out = fn(*inputs, backend=backend, **kw)
    return out, torch.autograd.grad(out, inputs, grad_out)


# Per frame-wise op: the public function, how its inputs are drawn (per-token (B, T*N, C) or
# per-frame (B, T, C), mean, std) and the names of their gradients.
FRAME_OPS = {
    "adaln_modulate": (
        adaln_modulate,
        (("token", 1.5, 2.0), ("frame", 0.0, 0.5), ("frame", 0.0, 0.5)),
        ("grad_x", "grad_shift", "grad_scale"),
    ),
    "gated_residual": (
        gated_residual,
        (("token", 0.0, 1.0), ("token", 0.0, 3.0), ("frame", 0.0, 0.5)),
        ("grad_x", "grad_y", "grad_gate"),
    ),
}


def frame_cases(*, frame_tokens, channels, max_batch, **extra):
    """Strategy for the ``case`` of assert_frame_op_matches_oracle: seed, b (up to max_batch), t (up
    to 3), n (from frame_tokens), c (from channels), dtype, layout, and the strategies in ``extra``."""
    return st.fixed_dictionaries(
        {
            "seed": st.integers(0, 2**31 - 1),
            "b": st.integers(1, max_batch),
            "t": st.integers(1, 3),
            "n": st.sampled_from(frame_tokens),
            "c": st.sampled_from(channels),
            "dtype": st.sampled_from(DTYPES),
            "layout": st.sampled_from(LAYOUTS),
            **extra,
        }
    )


def assert_frame_op_matches_oracle(op, case, backend, *, device="cpu", kernel_context=contextlib.nullcontext, **kw):
    """Output and input gradients of ``op`` (a FRAME_OPS name) on ``backend`` (run inside
    ``kernel_context()``) against the reference in the same dtype and its fp64 oracle, on inputs drawn
    from ``case`` (seed, b, t, n, c, dtype, layout); ``kw``: the op's other arguments."""
    fn, specs, grad_names = FRAME_OPS[op]
    g = torch.Generator().manual_seed(case["seed"])
    b, t, n, c, dtype, layout = (case[k] for k in ("b", "t", "n", "c", "dtype", "layout"))
    shapes = {"token": (b, t * n, c), "frame": (b, t, c)}
    inputs = [make(g, shapes[kind], dtype, layout, mean=mean, std=std, device=device) for kind, mean, std in specs]
    grad_out = make(g, shapes["token"], dtype, layout, device=device)
    kw["frame_tokens"] = n
    with kernel_context():
        out, grads = run_with_grads(fn, leaves(*inputs), grad_out, backend, **kw)
    ref, ref_grads = run_with_grads(fn, leaves(*inputs), grad_out, "reference", **kw)
    inputs64 = leaves(*inputs, dtype=torch.float64)
    oracle, oracle_grads = run_with_grads(fn, inputs64, grad_out.double(), "reference", **kw)
    assert_close_to_oracle(out, ref, oracle, name="out")
    for name, got, want, exact in zip(grad_names, grads, ref_grads, oracle_grads):
        assert_close_to_oracle(got, want, exact, name=name)


# ---- attention -----------------------------------------------------------------------------------


def out_and_grads(fn, q64, k64, v64, grad64, dtype):
    """[out, dq, dk, dv] of fn(q, k, v) in dtype, backpropagating grad64."""
    xs = [x.detach().to(dtype).requires_grad_(True) for x in (q64, k64, v64)]
    out = fn(*xs)
    out.backward(grad64.to(dtype))
    return [out.detach()] + [x.grad for x in xs]


def assert_attention_matches_reference(got, ref, oracle, d):
    """[out, dq, dk, dv] of a backend against the reference's in the same dtype and the fp64 oracle's.

    Unit-normal inputs: gradients that cancel to ~0 (dq when a query sees one key) still carry the
    rounding of their terms, dot products over D unit normals: magnitude D."""
    for name, a, r, o in zip(["out", "dq", "dk", "dv"], got, ref, oracle):
        assert_close_to_oracle(a, r, o, name=name, scale=float(d))


def assert_attention_backend_matches_reference(backend, dtype, q64, k64, v64, grad64, **kwargs):
    """frame_causal_attention(..., backend=backend, **kwargs) in dtype against the reference in dtype
    and in float64 (assert_attention_matches_reference)."""

    def run(name, dt):
        fn = lambda q, k, v: frame_causal_attention(q, k, v, backend=name, **kwargs)  # noqa: E731
        return out_and_grads(fn, q64, k64, v64, grad64, dt)

    got, ref, oracle = run(backend, dtype), run("reference", dtype), run("reference", torch.float64)
    assert_attention_matches_reference(got, ref, oracle, q64.shape[-1])


def rollout(q, k, v, chunks, cache, *, frame_tokens, **kwargs):
    """frame_causal_attention over consecutive chunks of ``chunks[i]`` frames through the KV cache
    ``cache``, the outputs concatenated along L."""
    outs, start = [], 0
    for c in chunks:
        sl = slice(start * frame_tokens, (start + c) * frame_tokens)
        outs.append(frame_causal_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl], frame_tokens=frame_tokens,
                                           kv_cache=cache, **kwargs))
        start += c
    return torch.cat(outs, dim=2)

"""Contracts every op must keep, whatever its backend (DESIGN.md: C++/CUDA ops are checked with
``torch.library.opcheck`` and usable under ``torch.compile``).

1. Every op the C++ extension registers under ``torch.ops.lam_fast`` passes ``opcheck`` (schema,
   fake-tensor rule, autograd registration, AOT dispatch) on sample inputs. The ops are enumerated
   from the dispatcher, not listed, and a test fails for a registered op without sample inputs in
   ``SAMPLES``: a new op cannot escape. On a CUDA machine the ops with a CUDA kernel are checked on
   CUDA too (marked ``gpu``).
2. Every public op compiles with ``torch.compile(fullgraph=True)`` for each backend that
   ``backend_status(op, "cpu")`` reports usable (but ``triton``, tested in its own files), with no
   graph break, and its forward and backward equal eager: exactly where the compiled graph runs the
   same kernel (the C++ custom ops, VQ indices), else within the tolerance rule of tests/tolerance.py.
   The graphs are compiled with ``aot_eager`` (dynamo + AOTAutograd + fake tensors: the parts that
   can break, in ~1 s); one ``slow`` test runs inductor over all of them at once.
"""

from __future__ import annotations

import importlib.util
from typing import Callable

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch._dynamo.utils
from tolerance import assert_close_to_oracle

from lam_fast.ops import Rope3D, adaln_modulate, backend_status, frame_causal_attention, gated_residual, vq_lookup

HAVE_EXT = importlib.util.find_spec("lam_fast._C") is not None
NOT_BUILT = "lam_fast._C is not built: run `pip install -e . --no-build-isolation`"
CUDA = torch.cuda.is_available()


def _registered_ops() -> list[str]:
    """Every lam_fast:: op, after loading each op's backends (that registers their fake and autograd rules)."""
    if not HAVE_EXT:
        return []
    import lam_fast._C  # noqa: F401  (a built but broken extension must fail, not skip)
    from lam_fast.ops._dispatch import OPS

    for op in OPS:
        for device in ("cpu", "cuda") if CUDA else ("cpu",):
            backend_status(op, device)
    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("lam_fast::"))


# ============================================================================ 1. opcheck
def _randn(g, *shape, dtype=torch.float32, device="cpu", grad=False, scale=1.0):
    t = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)
    return t.requires_grad_(grad)


def _adaln_fwd_samples(device):
    g = torch.Generator().manual_seed(0)
    out = []
    for dtype, (b, t, n, c) in [(torch.float32, (2, 3, 5, 19)), (torch.bfloat16, (1, 2, 7, 16)),
                                (torch.float16, (1, 4, 1, 8))]:
        x = _randn(g, b, t * n, c, dtype=dtype, device=device, grad=True)
        shift, scale = (_randn(g, b, t, c, dtype=dtype, device=device, grad=True, scale=0.5) for _ in range(2))
        out.append((x, shift, scale, n, 1e-6))
    # non-contiguous x (a transposed view), as a fused projection may hand over
    xt = _randn(g, 2, 19, 15, device=device).transpose(1, 2).requires_grad_()
    out.append((xt, _randn(g, 2, 3, 19, device=device, grad=True), _randn(g, 2, 3, 19, device=device, grad=True),
                5, 1e-5))
    return out


def _adaln_bwd_samples(device):
    out = []
    for x, shift, scale, n, eps in _adaln_fwd_samples(device):
        _, mean, rstd = torch.ops.lam_fast.adaln_modulate_fwd(x.detach(), shift.detach(), scale.detach(), n, eps)
        grad = torch.randn_like(x.detach())
        out.append((grad, x.detach(), scale.detach(), mean, rstd, n))
    return out


def _gated_fwd_samples(device):
    g = torch.Generator().manual_seed(1)
    out = []
    for dtype, (b, t, n, c) in [(torch.float32, (2, 3, 5, 19)), (torch.bfloat16, (1, 2, 7, 16)),
                                (torch.float16, (1, 1, 3, 33))]:
        x, y = (_randn(g, b, t * n, c, dtype=dtype, device=device, grad=True) for _ in range(2))
        out.append((x, y, _randn(g, b, t, c, dtype=dtype, device=device, grad=True), n))
    return out


def _gated_bwd_samples(device):
    return [(torch.randn_like(x.detach()), y.detach(), gate.detach(), n)
            for x, y, gate, n in _gated_fwd_samples(device)]


def _vq_samples(device):
    g = torch.Generator().manual_seed(2)
    return [(_randn(g, m, d, dtype=dtype, device=device), _randn(g, k, d, dtype=dtype, device=device))
            for dtype, (m, k, d) in [(torch.float32, (37, 45, 20)), (torch.float16, (16, 3, 8)),
                                     (torch.bfloat16, (5, 64, 33))]]


def _vq_quantize_samples(device):
    """As _vq_samples, with x and codebook requiring grad (the op has a registered autograd)."""
    return [tuple(t.requires_grad_(True) for t in args) for args in _vq_samples(device)]


# ---- attention: lam_fast::attention_fwd / lam_fast::attention_bwd (csrc/attention.cpp) -----------
# Schemas: attention_fwd(q, k, v, cos?, sin?, frame_tokens, q_frame_offset, scale) -> (out, lse);
# attention_bwd(grad_out, q, k, v, out, lse, cos?, sin?, frame_tokens, q_frame_offset, scale)
# -> (grad_q, grad_k, grad_v). Keep these builders in step with the schemas in csrc/module.cpp.
def _attention_fwd_samples(device):
    g = torch.Generator().manual_seed(3)
    out = []
    # (dtype, B, H, frames in q, frames in k, grid, D, q_frame_offset, rope)
    for dtype, b, h, tq, tk, grid, d, offset, rope in [
        (torch.float32, 1, 2, 3, 3, (1, 5), 16, 0, False),
        (torch.float32, 2, 1, 2, 2, (2, 2), 12, 0, True),
        (torch.bfloat16, 1, 2, 1, 3, (1, 3), 8, 2, True),  # a cached rollout step: 1 new frame after 2
        (torch.float16, 1, 1, 2, 2, (1, 7), 6, 0, False),
    ]:
        n = grid[0] * grid[1]
        q = _randn(g, b, h, tq * n, d, dtype=dtype, device=device, grad=True)
        k, v = (_randn(g, b, h, tk * n, d, dtype=dtype, device=device, grad=True) for _ in range(2))
        cos = sin = None
        if rope:
            frames = max(tk, offset + tq)
            cos, sin = Rope3D(d, grid).cos_sin(0, frames, torch.device(device))
        out.append((q, k, v, cos, sin, n, offset, d**-0.5))
    return out


def _attention_bwd_samples(device):
    out = []
    for q, k, v, cos, sin, n, offset, scale in _attention_fwd_samples(device):
        q, k, v = q.detach(), k.detach(), v.detach()
        o, lse = torch.ops.lam_fast.attention_fwd(q, k, v, cos, sin, n, offset, scale)
        out.append((torch.randn_like(o), q, k, v, o, lse, cos, sin, n, offset, scale))
    return out


#: Sample inputs per registered op: device -> list of argument tuples. Every lam_fast:: op the
#: extension registers must have an entry (test_every_registered_op_has_samples).
SAMPLES: dict[str, Callable[[str], list[tuple]]] = {
    "lam_fast::adaln_modulate_fwd": _adaln_fwd_samples,
    "lam_fast::adaln_modulate_bwd": _adaln_bwd_samples,
    "lam_fast::gated_residual_fwd": _gated_fwd_samples,
    "lam_fast::gated_residual_bwd": _gated_bwd_samples,
    "lam_fast::vq_nearest": _vq_samples,
    "lam_fast::vq_quantize": _vq_quantize_samples,
    # ---- attention (csrc/attention.cpp) ----
    "lam_fast::attention_fwd": _attention_fwd_samples,
    "lam_fast::attention_bwd": _attention_bwd_samples,
    # ---- new lam_fast:: ops: add their sample builders here ----
}

REGISTERED = _registered_ops()


def _opcheck_params():
    if not HAVE_EXT:
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=NOT_BUILT), id="not-built")]
    params = []
    for name in REGISTERED:
        for device in ("cpu", "cuda"):
            key = "CPU" if device == "cpu" else "CUDA"
            if name not in SAMPLES or not torch._C._dispatch_has_kernel_for_dispatch_key(name, key):
                continue
            if device == "cuda" and not CUDA:
                continue
            marks = [pytest.mark.gpu] if device == "cuda" else []
            params.append(pytest.param(name, device, marks=marks, id=f"{name.split('::')[1]}-{device}"))
    return params


def _packet(name: str):
    ns, rest = name.split("::")
    op_name, _, overload = rest.partition(".")
    return getattr(getattr(getattr(torch.ops, ns), op_name), overload or "default")


@pytest.mark.skipif(not HAVE_EXT, reason=NOT_BUILT)
def test_every_registered_op_has_samples():
    assert REGISTERED, "lam_fast._C registered no lam_fast:: op"
    missing = [name for name in REGISTERED if SAMPLES.get(name) is None]
    assert not missing, (f"lam_fast:: ops without opcheck samples: {missing}; add a builder for each to SAMPLES in "
                         f"{__file__}")


@pytest.mark.parametrize("name, device", _opcheck_params())
def test_opcheck(name, device):
    op = _packet(name)
    samples = SAMPLES[name](device)
    assert samples
    for args in samples:
        torch.library.opcheck(op, args)


# ============================================================================ 2. torch.compile
B, H, T, GRID, D = 1, 2, 3, (2, 2), 12
N = GRID[0] * GRID[1]
M, K, VQ_D = 24, 10, 6


def _compile_inputs(op: str, dtype=torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    if op == "frame_causal_attention":
        return [_randn(g, B, H, T * N, D, dtype=dtype, grad=True) for _ in range(3)]
    if op == "adaln_modulate":
        return [_randn(g, 2, T * N, 8, dtype=dtype, grad=True)] + [
            _randn(g, 2, T, 8, dtype=dtype, grad=True, scale=0.5) for _ in range(2)]
    if op == "gated_residual":
        return [_randn(g, 2, T * N, 8, dtype=dtype, grad=True) for _ in range(2)] + [
            _randn(g, 2, T, 8, dtype=dtype, grad=True, scale=0.5)]
    if op == "vq_lookup":
        return [_randn(g, M, VQ_D, dtype=dtype, grad=True), _randn(g, K, VQ_D, dtype=dtype, grad=True)]
    raise ValueError(op)


def _call(op: str, backend: str, rope: bool) -> Callable:
    """The public op as a function of tensors only; VQ returns (quantized, indices, losses summed)."""
    if op == "frame_causal_attention":
        rope_obj = Rope3D(D, GRID) if rope else None
        return lambda q, k, v: frame_causal_attention(q, k, v, frame_tokens=N, rope=rope_obj, backend=backend)
    if op == "adaln_modulate":
        return lambda x, shift, scale: adaln_modulate(x, shift, scale, frame_tokens=N, backend=backend)
    if op == "gated_residual":
        return lambda x, y, gate: gated_residual(x, y, gate, frame_tokens=N, backend=backend)

    def vq(x, codebook):
        out = vq_lookup(x, codebook, backend=backend)
        return out.quantized, out.indices, out.commitment_loss + 0.5 * out.codebook_loss

    return vq


def _compile_params():
    from lam_fast.ops._dispatch import OPS

    params = []
    for op in ("frame_causal_attention", "adaln_modulate", "gated_residual", "vq_lookup"):
        status = backend_status(op, "cpu")
        for backend, why in status.items():
            if backend == "triton" or "cpu" not in OPS[op].backends[backend].devices:
                continue  # triton: compiled in tests/ops/test_*_triton.py; cuda: not a CPU backend
            if why is not None:
                params.append(pytest.param(op, backend, False, id=f"{op}-{backend}",
                                           marks=pytest.mark.skip(reason=why)))
                continue
            params.append(pytest.param(op, backend, False, id=f"{op}-{backend}"))
            if op == "frame_causal_attention":
                params.append(pytest.param(op, backend, True, id=f"{op}-{backend}-rope"))
    return params


#: (op, backend) whose compiled graph calls the same C++ kernel as eager: results must be bitwise equal.
EXACT = {("frame_causal_attention", "cpp"), ("adaln_modulate", "cpp"), ("gated_residual", "cpp")}


def _forward_backward(fn, inputs, upstream=None):
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    floats = [o for o in outs if o.is_floating_point()]
    if upstream is None:
        g = torch.Generator().manual_seed(11)
        upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in floats]
    grads = torch.autograd.grad(floats, inputs, [u.to(o.dtype) for u, o in zip(upstream, floats)])
    return outs, grads, upstream


@pytest.mark.parametrize("op, backend, rope", _compile_params())
def test_compile_fullgraph_matches_eager(op, backend, rope):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    fn = _call(op, backend, rope)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fn, backend=counter, fullgraph=True)

    inputs = _compile_inputs(op)
    c_outs, c_grads, up = _forward_backward(compiled, [t.detach().clone().requires_grad_() for t in inputs])
    assert counter.frame_count == 1, f"{counter.frame_count} graphs compiled, want 1"
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])

    e_outs, e_grads, _ = _forward_backward(fn, [t.detach().clone().requires_grad_() for t in inputs], up)
    ref = _call(op, "reference", rope)
    r_outs, r_grads, _ = _forward_backward(ref, [t.detach().clone().requires_grad_() for t in inputs], up)
    o_outs, o_grads, _ = _forward_backward(ref, [t.detach().double().requires_grad_() for t in inputs], up)

    named = [(f"output[{i}]", *v) for i, v in enumerate(zip(c_outs, e_outs, r_outs, o_outs))]
    named += [(f"grad[{i}]", *v) for i, v in enumerate(zip(c_grads, e_grads, r_grads, o_grads))]
    for what, c, e, r, o in named:
        label = f"{op}[{backend}]{'+rope' if rope else ''} compiled {what}"
        if not c.is_floating_point():  # VQ indices: exact, for every backend
            assert torch.equal(c, e), label
            assert torch.equal(c, r), label
        elif (op, backend) in EXACT:
            assert c.dtype == e.dtype and torch.equal(c, e), f"{label}: not bitwise equal to eager"
        else:
            assert_close_to_oracle(c, r, o, name=label)


def _usable(op: str) -> list[str]:
    return [b for b, why in backend_status(op, "cpu").items() if why is None and b != "triton"]


def _chain(attn: list[str], ada: list[str], vq: list[str]) -> Callable:
    """A scalar loss through every given backend of every op (attention with RoPE)."""
    rope = Rope3D(D, GRID)

    def step(q, k, v, x, shift, scale, codebook):
        total = 0
        for b in attn:
            total = total + frame_causal_attention(q, k, v, frame_tokens=N, rope=rope, backend=b).square().mean()
        for b in ada:
            h = adaln_modulate(x, shift, scale, frame_tokens=N, backend=b)
            h = gated_residual(x, h, scale, frame_tokens=N, backend=b)
            total = total + h.square().mean()
            for c in vq:
                out = vq_lookup(h.flatten(0, 1), codebook, backend=c)
                total = total + out.quantized.square().mean() + out.commitment_loss + out.codebook_loss
        return total

    return step


@pytest.mark.slow
def test_inductor_compiles_every_cpu_backend_in_one_graph():
    """Inductor (the default backend) over every usable non-Triton backend of every op in one graph
    (a single cold compile): forward and backward match eager within the tolerance rule, against the
    same chain run in fp64 with every backend replaced by the reference."""
    attn, ada, vq = _usable("frame_causal_attention"), _usable("adaln_modulate"), _usable("vq_lookup")
    step = _chain(attn, ada, vq)
    g = torch.Generator().manual_seed(5)
    inputs = (_compile_inputs("frame_causal_attention") + _compile_inputs("adaln_modulate")
              + [_randn(g, K, 8, grad=True)])
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    c_in, e_in = ([t.detach().clone().requires_grad_() for t in inputs] for _ in range(2))
    o_in = [t.detach().double().requires_grad_() for t in inputs]
    c_loss = torch.compile(step, fullgraph=True)(*c_in)
    c_grads = torch.autograd.grad(c_loss, c_in)
    assert not torch._dynamo.utils.counters["graph_break"]
    e_loss = step(*e_in)
    e_grads = torch.autograd.grad(e_loss, e_in)
    oracle = _chain(*(["reference"] * len(names) for names in (attn, ada, vq)))
    o_loss = oracle(*o_in)
    o_grads = torch.autograd.grad(o_loss, o_in)
    assert_close_to_oracle(c_loss, e_loss, o_loss, name="inductor loss")
    for i, (c, e, o) in enumerate(zip(c_grads, e_grads, o_grads)):
        assert_close_to_oracle(c, e, o, name=f"inductor grad[{i}]")

"""Named kernel perf cases and the implementations each one times.

A :class:`Case` is one op at one shape and dtype. For a device it yields :class:`Impl` s: every
backend of the op that ``backend_status`` reports usable there (kind ``backend``; never a
hard-coded list, so a new cpp/triton/cuda backend is picked up by itself) and the public
alternatives it is measured against in the same run (kind ``baseline``):

- attention: ``sdpa_dense`` (F.scaled_dot_product_attention with the dense boolean frame-causal
  mask, built once per shape like the block mask), ``flex_attention`` (FlexAttention with a
  frame-causal ``create_block_mask``, torch.compile'd: forward and backward on CUDA; on CPU, where
  FlexAttention has no backward, forward only, compiled when the run compiles (``--compile``) and
  eager otherwise, as the record's note says; skipped when unavailable), on CUDA ``flash_attn``
  (no block-causal mask: one exact call per query frame t against the keys of frames <= t, the same
  FLOPs) and ``xformers`` (one call with the frame-causal mask as an additive tensor bias) where
  importable, and, with compile, ``compile_reference`` (torch.compile of the eager reference).
- AdaLN: ``eager_reference`` is the ``reference`` backend itself (not timed twice) and, with
  compile, ``compile_reference``.
- VQ: ``cdist_argmin`` (``torch.cdist(x, codebook).argmin(1)``); ``eager_reference`` is again the
  ``reference`` backend.

Sets: ``tiny`` (seconds; the tests and the GPU check's dry run), ``quick`` (the CI-scale CPU set,
the issue's CPU target shapes), ``model`` (attention and AdaLN at the predictor presets S/B/L:
their heads and width, 8 frames x 256 tokens, CPU scale), ``gpu`` (the issue's GPU target shapes:
ViT-L predictor attention B=8 H=16 8x256 D=64 bf16, its AdaLN-zero, VQ at K=32768) and
``model-gpu`` (every predictor preset S..G at GPU scale, VQ at K = 1024 / 8192 / 32768).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from lam_fast.ops import adaln_modulate, backend_status, frame_causal_attention, gated_residual, vq_lookup

MODES_TRAIN = ("fwd", "bwd", "fwd+bwd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class Impl:
    """One thing to time: ``fn(*inputs) -> Tensor`` (VQ: int64 indices)."""

    name: str
    kind: str  # "backend" | "baseline"
    fn: Callable
    modes: tuple[str, ...] = MODES_TRAIN
    note: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    op: str  # "frame_causal_attention" | "adaln_modulate" | "gated_residual" | "adaln_zero" | "vq_lookup"
    shape: dict = field(hash=False)
    dtype: str = "float32"
    modes: tuple[str, ...] = MODES_TRAIN
    #: The baseline the table's ratio column and the summary use.
    main_baseline: str = "eager_reference"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    # ---------------------------------------------------------------- inputs
    def make_inputs(self, device, dtype: torch.dtype | None = None, seed: int = 0) -> list[torch.Tensor]:
        """Seeded inputs (float ones require grad when the case has a backward)."""
        dtype = dtype or self.torch_dtype
        g = torch.Generator().manual_seed(seed)
        s = self.shape

        def randn(*size, scale=1.0):
            return (torch.randn(*size, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

        if self.op == "frame_causal_attention":
            size = (s["B"], s["H"], s["T"] * s["N"], s["D"])
            tensors = [randn(*size), randn(*size), randn(*size)]
        elif self.op == "adaln_modulate":
            tensors = [randn(s["B"], s["T"] * s["N"], s["C"]), randn(s["B"], s["T"], s["C"], scale=0.5),
                       randn(s["B"], s["T"], s["C"], scale=0.5)]
        elif self.op == "gated_residual":
            tensors = [randn(s["B"], s["T"] * s["N"], s["C"]), randn(s["B"], s["T"] * s["N"], s["C"]),
                       randn(s["B"], s["T"], s["C"], scale=0.5)]
        elif self.op == "adaln_zero":  # x, shift, scale, gate
            tensors = [randn(s["B"], s["T"] * s["N"], s["C"])] + [
                randn(s["B"], s["T"], s["C"], scale=0.5) for _ in range(3)
            ]
        elif self.op == "vq_lookup":
            # Codes spread like the data, so the nearest code is a real search (no trivial ties).
            tensors = [randn(s["M"], s["D"]), randn(s["K"], s["D"])]
        else:
            raise ValueError(f"unknown op {self.op!r}")
        if "bwd" in " ".join(self.modes):
            tensors = [t.requires_grad_() for t in tensors]
        return tensors

    # ---------------------------------------------------------------- implementations
    def backend_fn(self, backend: str) -> Callable:
        s = self.shape
        if self.op == "frame_causal_attention":
            return functools.partial(_attention, frame_tokens=s["N"], backend=backend)
        if self.op == "adaln_modulate":
            return functools.partial(adaln_modulate, frame_tokens=s["N"], backend=backend)
        if self.op == "gated_residual":
            return functools.partial(gated_residual, frame_tokens=s["N"], backend=backend)
        if self.op == "adaln_zero":
            return functools.partial(_adaln_zero, frame_tokens=s["N"], backend=backend)
        if self.op == "vq_lookup":
            return functools.partial(_vq_indices, backend=backend)
        raise ValueError(f"unknown op {self.op!r}")

    @property
    def dispatch_ops(self) -> tuple[str, ...]:
        return ("adaln_modulate", "gated_residual") if self.op == "adaln_zero" else (self.op,)

    def backends(self, device) -> list[str]:
        """Backends usable on ``device`` for every op this case calls (from backend_status)."""
        names = None
        for op in self.dispatch_ops:
            usable = [name for name, why in backend_status(op, device).items() if why is None]
            names = usable if names is None else [n for n in names if n in usable]
        return names or []

    def impls(self, device, *, compile: bool = False) -> list[Impl]:
        device = torch.device(device)
        out = [Impl(b, "backend", self.backend_fn(b), self.modes) for b in self.backends(device)]
        s = self.shape
        if self.op == "frame_causal_attention":
            out.append(Impl("sdpa_dense", "baseline", functools.partial(_sdpa_dense, frame_tokens=s["N"]), self.modes,
                            "dense bool mask built once per shape, outside the timing"))
            for make in (_flex_impl, _flash_attn_impl, _xformers_impl):
                impl = make(s, device, self.modes, self.torch_dtype, compile=compile)
                if impl is not None:
                    out.append(impl)
        if self.op == "vq_lookup":
            out.append(Impl("cdist_argmin", "baseline", _cdist_argmin, ("fwd",)))
        if compile and self.op != "vq_lookup":
            ref = self.backend_fn("reference")
            out.append(Impl("compile_reference", "baseline", torch.compile(ref, dynamic=False), self.modes))
        return out


# ---------------------------------------------------------------------------- op wrappers
def _attention(q, k, v, *, frame_tokens, backend):
    return frame_causal_attention(q, k, v, frame_tokens=frame_tokens, backend=backend)


def _adaln_zero(x, shift, scale, gate, *, frame_tokens, backend):
    """One AdaLN-zero residual: x + gate_t * modulate(x; shift_t, scale_t) (the block's sublayer is
    left out so only the two ops are timed)."""
    h = adaln_modulate(x, shift, scale, frame_tokens=frame_tokens, backend=backend)
    return gated_residual(x, h, gate, frame_tokens=frame_tokens, backend=backend)


def _vq_indices(x, codebook, *, backend):
    return vq_lookup(x, codebook, backend=backend).indices


def _cdist_argmin(x, codebook):
    return torch.cdist(x.detach(), codebook.detach()).argmin(1)


@functools.lru_cache(maxsize=8)
def _dense_mask(n: int, frame_tokens: int, device: torch.device) -> torch.Tensor:
    frame = torch.arange(n, device=device) // frame_tokens
    return frame[None, :] <= frame[:, None]


def _sdpa_dense(q, k, v, *, frame_tokens):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_dense_mask(q.shape[-2], frame_tokens, q.device))


def _per_frame(attend: Callable, q, k, v, frame_tokens: int):
    """Frame-causal attention as one unmasked call per query frame t against the keys of frames
    <= t, in the (B, L, H, D) layout flash-attn and xformers take (strided views, no copies in)."""
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    n = frame_tokens
    outs = [attend(qt[:, t * n:(t + 1) * n], kt[:, :(t + 1) * n], vt[:, :(t + 1) * n])
            for t in range(q.shape[2] // n)]
    return torch.cat(outs, 1).transpose(1, 2)


def _flash_attn_impl(s: dict, device: torch.device, modes, dtype: torch.dtype, compile: bool = False) -> Impl | None:
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return None
    try:
        from flash_attn import flash_attn_func
    except ImportError:  # optional GPU baseline
        return None
    fn = functools.partial(_per_frame, flash_attn_func, frame_tokens=s["N"])
    return Impl("flash_attn", "baseline", fn, modes, "flash_attn_func, one call per query frame (exact, no mask)")


@functools.lru_cache(maxsize=8)
def _frame_causal_bias(n: int, frame_tokens: int, heads: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The frame-causal mask as an additive bias (0 / -inf), (1, H, L, L) expanded over the batch,
    stored with its last dimension padded to a multiple of 8 as xformers requires of a tensor bias."""
    padded = -(-n // 8) * 8
    storage = torch.zeros(heads, n, padded, dtype=dtype, device=device)
    bias = storage[:, :, :n]
    bias.masked_fill_(~_dense_mask(n, frame_tokens, device), float("-inf"))
    return bias[None]


def _xformers_impl(s: dict, device: torch.device, modes, dtype: torch.dtype, compile: bool = False) -> Impl | None:
    if device.type != "cuda":
        return None
    try:
        from xformers.ops import memory_efficient_attention
    except ImportError:  # optional GPU baseline
        return None

    def call(q, k, v):
        bias = _frame_causal_bias(q.shape[2], s["N"], q.shape[1], q.dtype, q.device).expand(q.shape[0], -1, -1, -1)
        out = memory_efficient_attention(*(x.transpose(1, 2) for x in (q, k, v)), attn_bias=bias)
        return out.transpose(1, 2)

    return Impl("xformers", "baseline", call, modes,
                "xformers memory_efficient_attention, one call, the frame-causal mask as a tensor bias")


def _flex_impl(s: dict, device: torch.device, modes, dtype: torch.dtype = torch.float32,
               compile: bool = False) -> Impl | None:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:  # pragma: no cover - old torch
        return None
    n_tok = s["N"]

    def frame_causal(b, h, q_idx, kv_idx):
        return kv_idx // n_tok <= q_idx // n_tok

    length = s["T"] * s["N"]
    try:
        block_mask = create_block_mask(frame_causal, None, None, length, length, device=str(device))
    except Exception:  # noqa: BLE001 - any failure means the baseline is unavailable here
        return None
    if device.type == "cuda":
        fn = torch.compile(flex_attention)
        return Impl("flex_attention", "baseline", lambda q, k, v: fn(q, k, v, block_mask=block_mask), modes,
                    "torch.compile(flex_attention)")
    # CPU: no backward, and inputs that require grad are refused (the forward is the same on detached ones)
    fwd_only = tuple(m for m in modes if m == "fwd")
    if compile:
        fn = torch.compile(flex_attention)
        return Impl("flex_attention", "baseline",
                    lambda q, k, v: fn(q.detach(), k.detach(), v.detach(), block_mask=block_mask), fwd_only,
                    "torch.compile(flex_attention) on CPU, forward only (no CPU backward)")

    def call(q, k, v):
        with warnings.catch_warnings():  # "called without torch.compile": known, noted in the record
            warnings.simplefilter("ignore", UserWarning)
            return flex_attention(q.detach(), k.detach(), v.detach(), block_mask=block_mask)

    return Impl("flex_attention", "baseline", call, fwd_only,
                "eager (unfused) on CPU, forward only; run with --compile for the compiled one")


# ---------------------------------------------------------------------------- sets
def _attention_case(name, B, H, T, N, D, dtype="float32", main_baseline="sdpa_dense"):
    return Case(name, "frame_causal_attention", dict(B=B, H=H, T=T, N=N, D=D), dtype, main_baseline=main_baseline)


def _adaln_zero_case(name, B, T, N, C, dtype="float32", main_baseline="eager_reference"):
    return Case(name, "adaln_zero", dict(B=B, T=T, N=N, C=C), dtype, main_baseline=main_baseline)


def _adaln_cases(prefix, B, T, N, C, dtype="float32"):
    shape = dict(B=B, T=T, N=N, C=C)
    return [
        Case(f"{prefix}_zero", "adaln_zero", shape, dtype),
        Case(f"{prefix}_modulate", "adaln_modulate", shape, dtype),
        Case(f"{prefix}_gated", "gated_residual", shape, dtype),
    ]


def _vq_case(name, M, K, D, dtype="float32"):
    return Case(name, "vq_lookup", dict(M=M, K=K, D=D), dtype, modes=("fwd",), main_baseline="cdist_argmin")


def tiny_set() -> list[Case]:
    return [
        _attention_case("attn_tiny", 1, 2, 3, 16, 16),
        *_adaln_cases("adaln_tiny", 1, 2, 8, 32),
        _vq_case("vq_tiny", 64, 32, 8),
    ]


def quick_set() -> list[Case]:
    """The CI-scale CPU set: fp32 at the issue's CPU target shapes, and the same in bf16 (the bf16
    C++ paths: AVX-512 BF16 / AMX tile GEMMs in attention, bf16 loads in AdaLN and VQ)."""
    return [
        _attention_case("attn_b2h4_8x256_d64", 2, 4, 8, 256, 64),
        *_adaln_cases("adaln_b2_8x256_c384", 2, 8, 256, 384),
        _vq_case("vq_m8192_k4096_d128", 8192, 4096, 128),
        _attention_case("attn_b2h4_8x256_d64_bf16", 2, 4, 8, 256, 64, "bfloat16"),
        _adaln_zero_case("adaln_b2_8x256_c384_zero_bf16", 2, 8, 256, 384, "bfloat16"),
        _vq_case("vq_m8192_k4096_d128_bf16", 8192, 4096, 128, "bfloat16"),
    ]


def model_set() -> list[Case]:
    from lam_fast.models.config import PREDICTOR_PRESETS

    cases = []
    for preset in ("S", "B", "L"):
        cfg = PREDICTOR_PRESETS[preset]
        head_dim = cfg.width // cfg.heads
        cases.append(_attention_case(f"attn_{preset}_h{cfg.heads}_8x256_d{head_dim}", 2, cfg.heads, 8, 256, head_dim))
        cases.append(Case(f"adaln_{preset}_zero_8x256_c{cfg.width}", "adaln_zero", dict(B=2, T=8, N=256, C=cfg.width)))
    return cases


# GPU sets: the main baseline of each op is the one its GPU target is stated against (compiled
# FlexAttention, torch.compile of the reference, cdist + argmin); see perf/summary.py.
GPU_BATCH, GPU_VQ_ROWS, VQ_DIM = 8, 16384, 128


def gpu_set() -> list[Case]:
    return [
        _attention_case("attn_L_b8h16_8x256_d64_bf16", GPU_BATCH, 16, 8, 256, 64, "bfloat16", "flex_attention"),
        _adaln_zero_case("adaln_L_zero_b8_8x256_c1024_bf16", GPU_BATCH, 8, 256, 1024, "bfloat16", "compile_reference"),
        _vq_case(f"vq_m{GPU_VQ_ROWS}_k32768_d{VQ_DIM}", GPU_VQ_ROWS, 32768, VQ_DIM),
    ]


def model_gpu_set() -> list[Case]:
    from lam_fast.models.config import PREDICTOR_PRESETS

    cases = []
    for preset in ("S", "B", "L", "H", "G"):
        cfg = PREDICTOR_PRESETS[preset]
        d = cfg.width // cfg.heads
        cases.append(_attention_case(f"attn_{preset}_b8h{cfg.heads}_8x256_d{d}_bf16", GPU_BATCH, cfg.heads, 8, 256, d,
                                     "bfloat16", "flex_attention"))
        cases.append(_adaln_zero_case(f"adaln_{preset}_zero_b8_8x256_c{cfg.width}_bf16", GPU_BATCH, 8, 256, cfg.width,
                                      "bfloat16", "compile_reference"))
    for k in (1024, 8192, 32768):
        cases.append(_vq_case(f"vq_m{GPU_VQ_ROWS}_k{k}_d{VQ_DIM}", GPU_VQ_ROWS, k, VQ_DIM))
    return cases


SETS: dict[str, Callable[[], list[Case]]] = {"tiny": tiny_set, "quick": quick_set, "model": model_set,
                                             "gpu": gpu_set, "model-gpu": model_gpu_set}


def get_set(name: str) -> list[Case]:
    if name not in SETS:
        raise ValueError(f"unknown case set {name!r}; known: {sorted(SETS)}")
    return SETS[name]()

"""Kernel perf harness: check every implementation against the reference, then time it.

For each case (``perf/cases.py``) and each implementation (the op's usable backends and the
public baselines):

1. Correctness first, on seeded inputs: the reference backend run in float64 is the oracle. VQ
   backends must return exactly the oracle's indices (a baseline such as cdist+argmin may differ
   only on near-ties, within float32 rounding of the distances); float outputs, and for backward
   modes the input gradients under a random upstream gradient, must satisfy
   ``max|impl - oracle| <= 4 x max|reference_same_dtype - oracle| + 16 ulp x max|oracle|``.
   The oracle and the same-dtype reference are computed once per case. A failure raises
   :class:`CorrectnessError` and nothing is timed for that implementation (with ``keep_going``
   the failure is recorded in the run's ``failures`` and the other implementations go on).
2. Timing per mode, interleaved: the implementations of a (case, mode) take turns in rounds, so a
   load change on the machine hits them alike. ``fwd`` runs under ``torch.no_grad``; ``bwd`` times
   ``torch.autograd.grad`` with a seeded random upstream gradient on a graph saved by an untimed
   forward just before (a fresh one per call: compiled backwards cannot be replayed); ``fwd+bwd``
   times both. Warm-up calls first, then ``reps`` timed calls; ``min_time_s`` raises the reps of
   fast calls, up to 10x, so the group runs that long. p20/p50/p80 in ms.
   CPU: ``time.perf_counter`` around each call. CUDA: CUDA events around each call, after a
   256 MiB write that evicts the L2 cache (so bandwidth-bound kernels are timed from DRAM, as the
   copy floor is) and gives the host time to queue the call's launches (so launch latency of a
   multi-kernel call is not timed as GPU idle), as ``triton.testing.do_bench`` does.
3. Derived numbers: TFLOP/s for attention (the frame-causal part only: sum over frames t of
   4 N * (t+1) N * D per (batch, head) forward; backward counted as 2x forward, no recompute) and
   VQ (2 M K D; the forward search only); GB/s for AdaLN (bytes of inputs + outputs: forward reads
   the inputs and writes the output; backward reads the upstream gradient and the inputs and
   writes one gradient per input). ``floor_fraction`` divides by the floors measured in the same
   run: copy bandwidth (a large ``Tensor.copy_``, read + write counted) and the matmul rate of
   the case's dtype. On CPU the copy floor is a DRAM rate: an AdaLN case whose few MB stay in cache
   can exceed it (floor_fraction > 1), which says the case is cache-resident, not that it beat the floor.
4. Peak memory of one extra call of each (impl, mode), measured from what is live before it
   (inputs, and for ``bwd`` the saved graph, excluded):
   - ``peak_mem_bytes``: the tensor allocator's high-water mark. CUDA:
     ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the allocation and
     free events of the CPU allocator recorded by ``torch.profiler`` (``profile_memory=True``),
     summed in order; the largest running sum is the peak. Kernel scratch taken with malloc /
     ``std::vector`` instead of a tensor is invisible to it, hence:
   - ``peak_rss_bytes`` (CPU, Linux): the growth of the process's resident set during a plain call,
     after ``malloc_trim`` and a reset of the RSS high-water mark (``/proc/self/clear_refs``).
     Counts every allocation the call touches, at page granularity; null where /proc does not allow it.
   - ``out_bytes``: what the call returns and keeps alive (the output, the gradients, and for
     ``fwd+bwd`` also the forward output), so ``peak - out_bytes`` is the call's working memory.
   For attention and VQ, ``mem_check`` compares that working memory (the larger of the two peaks,
   minus ``out_bytes``) with ONE fp32 L x L matrix (L = T*N) or ONE fp32 M x K matrix:
   ``below_quadratic`` is false for an implementation that materialises the score / distance
   matrix (the eager reference, SDPA with a dense mask, cdist) and must be true for the fused kernels.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import importlib.metadata
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lam_fast.ops.tolerance import REFERENCE_FACTOR, ROUNDING_ULPS, allowed_error, max_abs_error
from perf.cases import Case, Impl

REPO = Path(__file__).resolve().parent.parent
L2_FLUSH_BYTES = 256 * 1024 * 1024


class CorrectnessError(AssertionError):
    """An implementation disagrees with the reference; the message names case, impl and output."""


# ============================================================================ helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _detached(inputs, dtype=None):
    out = []
    for t in inputs:
        c = t.detach().clone() if dtype is None else t.detach().to(dtype)
        out.append(c.requires_grad_(t.requires_grad))
    return out


def _upstream(out: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out.shape, generator=g, dtype=torch.float64).to(device=out.device, dtype=out.dtype)


class _Clock:
    """Seconds of one call of ``fn``: perf_counter on CPU; CUDA events after an L2-evicting write on CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device=device) if device.type == "cuda" else None

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.flush is None:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.flush.zero_()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


_CLOCKS: dict[torch.device, _Clock] = {}


def _clock(device: torch.device) -> _Clock:
    if device not in _CLOCKS:
        _CLOCKS[device] = _Clock(device)
    return _CLOCKS[device]


# ============================================================================ floors
def measure_floors(device, *, reps: int = 5) -> dict:
    """Copy bandwidth and matmul rates on ``device``, measured now (the same run as the cases)."""
    device = torch.device(device)
    clock = _clock(device)

    def median_s(fn) -> float:
        fn()
        _sync(device)
        return quantile([clock(fn) for _ in range(reps)], 0.5)

    cuda = device.type == "cuda"
    n = (256 if cuda else 64) * 1024 * 1024  # fp32 elements: 1 GiB on CUDA (>> L2), 256 MiB on CPU
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    copy_s = median_s(lambda: dst.copy_(src))
    floors: dict = {"copy_GBps": 2 * src.nbytes / copy_s / 1e9}
    del src, dst
    size = 8192 if cuda else 2048
    dtypes = [torch.float32]
    if cuda:
        dtypes += [torch.bfloat16, torch.float16]
    elif _cpu_has_bf16():
        dtypes += [torch.bfloat16]
    for dtype in dtypes:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        secs = median_s(lambda: torch.mm(a, b))
        floors[f"matmul_{_dtype_name(dtype)}_TFLOPs"] = 2 * size**3 / secs / 1e12
        del a, b
    timer = "CUDA events after an L2 flush" if cuda else "perf_counter"
    floors["method"] = (f"copy_: 2 x {n * 4 >> 20} MiB fp32 per call; matmul: {size}^3 torch.mm "
                        f"(fp32 without TF32); p50 of {reps}; {timer}")
    return floors


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}[dtype]


# ============================================================================ correctness
def _outputs_and_grads(fn: Callable, inputs, grad: bool, upstream=None):
    if not grad:
        with torch.no_grad():
            return fn(*inputs), None, None
    out = fn(*inputs)
    up = _upstream(out) if upstream is None else upstream.to(out.dtype)
    grads = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], up)
    return out, grads, up


class _Oracle:
    """The fp64 oracle and the same-dtype reference of one case, computed once (they are the
    expensive part of checking several implementations at model shapes)."""

    def __init__(self, case: Case, device: torch.device, seed: int):
        self.case, self.device, self.seed = case, device, seed
        self._cache: dict[bool, tuple] = {}

    def inputs(self):
        return self.case.make_inputs(self.device, seed=self.seed)

    def get(self, grad: bool):
        if grad not in self._cache:
            ref_fn = self.case.backend_fn("reference")
            inputs = self.inputs()
            if self.case.op == "vq_lookup":
                with torch.no_grad():
                    self._cache[grad] = (inputs, ref_fn(*inputs))
            else:
                o_out, o_grads, up = _outputs_and_grads(ref_fn, _detached(inputs, torch.float64), grad)
                r_out, r_grads, _ = _outputs_and_grads(ref_fn, _detached(inputs), grad, up)
                self._cache[grad] = (inputs, (o_out, o_grads, up, r_out, r_grads))
        return self._cache[grad]


def check_correctness(case: Case, impl: Impl, device, *, seed: int = 0, oracle: _Oracle | None = None) -> dict:
    """Raise CorrectnessError unless ``impl`` matches the reference on ``case``'s seeded inputs.

    Returns the largest error found and what was allowed (for the record)."""
    device = torch.device(device)
    oracle = oracle or _Oracle(case, device, seed)
    if case.op == "vq_lookup":
        inputs, want = oracle.get(False)
        with torch.no_grad():
            got = impl.fn(*_detached(inputs))
        if got.shape != want.shape or got.dtype != torch.int64:
            raise CorrectnessError(f"{case.name}[{impl.name}]: indices {tuple(got.shape)} {got.dtype}, "
                                   f"want {tuple(want.shape)} int64")
        bad = (got != want).nonzero().flatten()
        if bad.numel() == 0:
            return {"mismatches": 0}
        if impl.kind == "backend":
            first = bad[0].item()
            raise CorrectnessError(f"{case.name}[{impl.name}]: {bad.numel()} of {want.numel()} indices differ from "
                                   f"the reference (first at row {first}: {got[first].item()} vs {want[first].item()})")
        # A baseline may pick another code only where the two distances tie within fp32 rounding.
        x, cb = inputs[0].detach().double()[bad], inputs[1].detach().double()
        d_got = (x - cb[got[bad]]).pow(2).sum(1)
        d_want = (x - cb[want[bad]]).pow(2).sum(1)
        slack = 64 * torch.finfo(inputs[0].dtype).eps * (x.pow(2).sum(1) + cb[want[bad]].pow(2).sum(1))
        if not bool(((d_got - d_want) <= slack).all()):
            raise CorrectnessError(f"{case.name}[{impl.name}]: {bad.numel()} indices differ from the reference "
                                   "and not all are near-ties within fp32 rounding")
        return {"mismatches": int(bad.numel()), "note": "near-ties only"}

    grad = any(m != "fwd" for m in impl.modes)
    inputs, (o_out, o_grads, up, r_out, r_grads) = oracle.get(grad)
    i_out, i_grads, _ = _outputs_and_grads(impl.fn, _detached(inputs), grad, up)
    named = [("output", i_out, r_out, o_out)]
    if grad:
        named += [(f"grad[{i}]", a, b, c) for i, (a, b, c) in enumerate(zip(i_grads, r_grads, o_grads))]
    worst = {"max_err": 0.0, "allowed": None}
    for what, actual, ref, orc in named:
        if actual.shape != orc.shape or actual.dtype != ref.dtype:
            raise CorrectnessError(f"{case.name}[{impl.name}] {what}: {tuple(actual.shape)} {actual.dtype}, "
                                   f"want {tuple(orc.shape)} {ref.dtype}")
        err, ref_err = max_abs_error(actual, orc), max_abs_error(ref, orc)
        allowed = allowed_error(ref_err, orc.abs().max().item(), case.torch_dtype)
        if not err <= allowed:  # NaN fails too
            raise CorrectnessError(f"{case.name}[{impl.name}] {what}: max |impl - fp64 oracle| = {err:.3e} > allowed "
                                   f"{allowed:.3e} ({REFERENCE_FACTOR} x reference error {ref_err:.3e} + "
                                   f"{ROUNDING_ULPS} ulp)")
        if err >= worst["max_err"]:
            worst = {"max_err": err, "allowed": allowed}
    return worst


# ============================================================================ peak memory
def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    return []


def _live_bytes(obj) -> int:
    """Bytes of the distinct storages behind the tensors in ``obj``."""
    seen, total = set(), 0
    for t in _tensors(obj):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


_BENIGN_ALLOC_WARNING = "Memory block of unknown size was allocated before the profiling started"


@contextlib.contextmanager
def _kineto_quiet():
    """Drop the two ``USDT: ... profiler_start/stop`` lines kineto writes to fd 2 per profiling
    session, and the allocator's warning that a block allocated before profiling was freed (the
    inputs of a bwd call: expected); anything else written to stderr meanwhile is passed on."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("USDT:") and _BENIGN_ALLOC_WARNING not in line]
            if kept:
                sys.stderr.write("".join(kept))


def _cpu_allocator_peak(fn: Callable[[], object]) -> tuple[int, object]:
    """(peak bytes above the start, fn's result) from the CPU allocator's events under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with _kineto_quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == cpu]
    events.sort(key=lambda e: e.start_ns())  # stable: same-time events keep their recorded order
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak, result


_LIBC = None


def _malloc_trim() -> None:
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        _LIBC = ctypes.CDLL(name) if name else False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def _rss_growth(fn: Callable[[], object]) -> tuple[int | None, object]:
    """(growth of the resident set's high-water mark during fn, fn's result); None without /proc.

    Free heap memory is returned to the system first (malloc_trim), so pages the call reuses from
    earlier calls count as growth again; no gc.collect (0.1 s a call with dynamo loaded)."""
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        base = _proc_status_bytes("VmRSS")
    except OSError:
        return None, fn()
    result = fn()
    return max(0, _proc_status_bytes("VmHWM") - base), result


def quadratic_bytes(case: Case) -> int | None:
    """Bytes of one fp32 L x L (attention, L = T*N) or M x K (VQ) matrix; None for other ops."""
    s = case.shape
    if case.op == "frame_causal_attention":
        return 4 * (s["T"] * s["N"]) ** 2
    if case.op == "vq_lookup":
        return 4 * s["M"] * s["K"]
    return None


# ============================================================================ timing
@dataclass
class _Runner:
    """One (impl, mode) ready to be called repeatedly; ``step()`` returns the timed seconds."""

    impl: Impl
    mode: str
    inputs: list
    device: torch.device

    def __post_init__(self):
        self.grad_inputs = [t for t in self.inputs if t.requires_grad]
        self.up = None
        self.clock = _clock(self.device)
        if self.mode in ("bwd", "fwd+bwd"):
            self.up = _upstream(self.impl.fn(*self.inputs))

    def prepare(self):
        """Untimed set-up of one call: for ``bwd`` a fresh graph (compiled backwards may not be
        replayed with retain_graph, so every timed backward gets its own forward)."""
        return self.impl.fn(*self.inputs) if self.mode == "bwd" else None

    def call(self, graph=None):
        """One call of the mode; returns what it produces and keeps alive."""
        if self.mode == "fwd":
            with torch.no_grad():
                return self.impl.fn(*self.inputs)
        if self.mode == "bwd":
            return torch.autograd.grad(graph, self.grad_inputs, self.up)
        out = self.impl.fn(*self.inputs)
        return out, torch.autograd.grad(out, self.grad_inputs, self.up)

    def step(self) -> float:
        graph = self.prepare()
        return self.clock(lambda: self.call(graph))

    def memory(self) -> dict:
        """Peak memory of one call (see the module docstring, 4.)."""
        graph = self.prepare()
        _sync(self.device)
        if self.device.type == "cuda":
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            result = self.call(graph)
            _sync(self.device)
            return {"peak_mem_bytes": int(torch.cuda.max_memory_allocated(self.device) - before),
                    "peak_mem_method": "torch.cuda.max_memory_allocated", "out_bytes": _live_bytes(result)}
        peak, result = _cpu_allocator_peak(lambda: self.call(graph))
        rec = {"peak_mem_bytes": int(peak), "peak_mem_method": "torch.profiler CPU allocator events",
               "out_bytes": _live_bytes(result)}
        del result, graph
        graph = self.prepare()
        rss, result = _rss_growth(lambda: self.call(graph))
        rec["peak_rss_bytes"] = rss
        if rss is None:
            rec["peak_rss_note"] = "/proc/self/clear_refs not writable: RSS high-water mark not measured"
        return rec


def time_interleaved(runners: list[_Runner], *, reps: int, warmup: int, rounds: int = 5,
                     min_time_s: float = 0.0, max_reps: int | None = None) -> list[list[float]]:
    """Seconds per call for each runner: warm-up, then ``reps`` calls each in alternating rounds.

    With ``min_time_s``, fast calls get more reps (up to ``max_reps``, default 10 x reps) so that
    the timed calls of the group take about that long: sub-millisecond ops are otherwise all noise.
    """
    last = 0.0  # one call of every runner, from the last warm-up call
    for r in runners:
        secs = [r.step() for _ in range(warmup)]
        last += secs[-1] if secs else 0.0
    if min_time_s > 0 and last > 0:
        reps = int(min(max_reps or 10 * reps, max(reps, min_time_s / last)))
    samples: list[list[float]] = [[] for _ in runners]
    rounds = max(1, min(rounds, reps))
    per_round = [reps // rounds + (1 if i < reps % rounds else 0) for i in range(rounds)]
    for n in per_round:
        for i, r in enumerate(runners):
            samples[i].extend(r.step() for _ in range(n))
    return samples


# ============================================================================ metrics
def work(case: Case, mode: str) -> tuple[str, float] | None:
    """("TFLOPs", flops) or ("GBps", bytes) of one call of ``mode``; None if not defined."""
    s, mult = case.shape, {"fwd": 1.0, "bwd": 2.0, "fwd+bwd": 3.0}[mode]
    if case.op == "frame_causal_attention":
        t = s["T"]
        fwd = 4.0 * s["B"] * s["H"] * s["N"] ** 2 * s["D"] * t * (t + 1) / 2
        return "TFLOPs", fwd * mult
    if case.op == "vq_lookup":
        return ("TFLOPs", 2.0 * s["M"] * s["K"] * s["D"]) if mode == "fwd" else None
    itemsize = torch.empty((), dtype=case.torch_dtype).element_size()
    tok, frame = s["B"] * s["T"] * s["N"] * s["C"], s["B"] * s["T"] * s["C"]
    n_in = {"adaln_modulate": tok + 2 * frame, "gated_residual": 2 * tok + frame,
            "adaln_zero": tok + 3 * frame}[case.op]
    fwd = n_in + tok
    bwd = tok + 2 * n_in  # upstream grad + inputs read, one gradient per input written
    return "GBps", itemsize * {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def _floor_key(case: Case) -> str:
    return f"matmul_{_dtype_name(case.torch_dtype)}_TFLOPs"


def _mem_check(case: Case, mem: dict) -> dict | None:
    quad = quadratic_bytes(case)
    if quad is None or mem.get("peak_mem_bytes") is None:
        return None
    peak = max(mem["peak_mem_bytes"], mem.get("peak_rss_bytes") or 0)
    excess = max(0, peak - mem["out_bytes"])
    return {"quadratic_fp32_bytes": quad, "working_bytes": excess, "working_over_quadratic": excess / quad,
            "below_quadratic": excess < quad}


# ============================================================================ suite
def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        sha += "-dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        sha = None
    out = {"torch": torch.__version__, "python": platform.python_version(), "lam_fast_git_sha": sha,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cuda": torch.version.cuda}
    for dist in ("triton", "flash_attn", "xformers", "lam_fast"):
        out[dist] = _dist_version(dist.replace("_", "-")) or _dist_version(dist)
    try:
        import lam_fast._C as ext

        out["lam_fast_cpu_capability"] = ext.cpu_capability()
    except (ImportError, OSError, AttributeError) as exc:
        out["lam_fast_cpu_capability"] = f"unavailable: {type(exc).__name__}: {exc}"
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cpus)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def cpu_class() -> str:
    """``cpu-<vendor>-<isa>-<n>c``: what decides a CPU's kernel ratios. The vendor and the widest
    matrix/vector unit (``amx`` > ``avx512bf16`` > ``avx512`` > ``avx2`` > ``base``) set which bf16
    and fp32 paths run and how fast BLAS is against our kernels; the core count sets the threads.
    E.g. ``cpu-intel-amx-2c`` (Xeon, Sapphire Rapids class), ``cpu-amd-avx512bf16-2c`` (EPYC Zen 4 / Zen 5: AVX-512 BF16, no AMX)."""
    vendor, flags = "other", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id":
                vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(value.strip(), "other")
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = next((name for name, flag in (("amx", "amx_bf16"), ("avx512bf16", "avx512_bf16"), ("avx512", "avx512f"),
                                        ("avx2", "avx2")) if flag in flags), "base")
    return f"cpu-{vendor}-{isa}-{os.cpu_count()}c"


def device_class(device: torch.device) -> str:
    """The stored-baseline name of a device: :func:`cpu_class` on a CPU, else the GPU model (``h100``,
    ``h200``, ``a100``, ...). perf/baselines/<device_class>.json holds the baseline of that class."""
    device = torch.device(device)
    if device.type != "cuda":
        return cpu_class()
    name = torch.cuda.get_device_name(device).lower()
    for model in ("h200", "h100", "h20", "b200", "gb200", "a100", "a10g", "l40s", "l4", "rtx 4090"):
        if model in name:
            return model.replace(" ", "")
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def run_case(case: Case, device, *, reps: int, warmup: int, compile: bool = False, impls: list[Impl] | None = None,
             min_time_s: float = 0.0, log: Callable[[str], None] = print, keep_going: bool = False,
             failures: list[dict] | None = None, measure_memory: bool = True,
             on_mode: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Check, then time every implementation of ``case`` in every mode; one record per (impl, mode).

    keep_going: an implementation that fails its check (or raises) is appended to ``failures``
    and left out instead of aborting the case. on_mode: called with the records so far after each mode."""
    device = torch.device(device)
    impls = case.impls(device, compile=compile) if impls is None else impls
    oracle = _Oracle(case, device, seed=0)
    checked = []
    for impl in impls:
        try:
            info = check_correctness(case, impl, device, oracle=oracle)  # a wrong implementation is never timed
        except Exception as exc:  # noqa: BLE001 - recorded with its traceback when keep_going, else re-raised
            if not keep_going:
                raise
            _record_failure(failures, case, impl.name, "check", exc, log)
            continue
        checked.append((impl, info))
    del oracle
    records = []
    for mode in case.modes:
        active = [(impl, info) for impl, info in checked if mode in impl.modes]
        runners, samples = _time_mode(case, mode, active, device, reps=reps, warmup=warmup, min_time_s=min_time_s,
                                      keep_going=keep_going, failures=failures, log=log)
        unit_work = work(case, mode)
        for (impl, info), runner, secs in zip(active, runners, samples):
            if runner is None:
                continue
            p20, p50, p80 = (quantile(secs, q) * 1e3 for q in (0.2, 0.5, 0.8))
            rec = {"case": case.name, "op": case.op, "impl": impl.name, "kind": impl.kind, "shape": dict(case.shape),
                   "dtype": case.dtype, "mode": mode, "p20_ms": p20, "p50_ms": p50, "p80_ms": p80, "reps": len(secs),
                   "ratio_vs": {}, "floor_fraction": None, "peak_mem_bytes": None,
                   "correctness": info, "main_baseline": case.main_baseline}
            if measure_memory:
                try:
                    mem = runner.memory()
                except Exception as exc:  # noqa: BLE001 - a failed measurement is recorded, not fatal
                    mem = {"peak_mem_bytes": None, "peak_mem_note": f"{type(exc).__name__}: {exc}"}
                rec.update(mem)
                check = _mem_check(case, mem)
                if check is not None:
                    rec["mem_check"] = check
            else:
                rec["peak_mem_note"] = "not measured (measure_memory=False)"
            if impl.note:
                rec["note"] = impl.note
            if unit_work is not None:
                unit, amount = unit_work
                rec[unit] = amount / (p50 / 1e3) / (1e12 if unit == "TFLOPs" else 1e9)
            records.append(rec)
        del runners
        _fill_ratios([r for r in records if r["mode"] == mode])
        for r in records:
            if r["mode"] == mode:
                mem = r.get("peak_mem_bytes")
                mem_s = f"  peak {max(mem, r.get('peak_rss_bytes') or 0) / 2**20:8.1f} MiB" if mem is not None else ""
                log(f"  {case.name:28s} {mode:8s} {r['impl']:18s} p50 {r['p50_ms']:9.3f} ms{mem_s}")
        if on_mode:
            on_mode(records)
    return records


def _time_mode(case, mode, active, device, *, reps, warmup, min_time_s, keep_going, failures, log):
    """Runners and samples of one mode; with keep_going an impl that raises is dropped (runner None)."""
    runners = []
    for impl, _ in active:
        try:
            runners.append(_Runner(impl, mode, case.make_inputs(device), device))
        except Exception as exc:  # noqa: BLE001
            if not keep_going:
                raise
            _record_failure(failures, case, impl.name, mode, exc, log)
            runners.append(None)
    live = [r for r in runners if r is not None]
    try:
        live_samples = time_interleaved(live, reps=reps, warmup=warmup, min_time_s=min_time_s)
    except Exception:
        if not keep_going:
            raise
        live_samples = []  # find the culprit: time each alone
        for i, r in enumerate(live):
            try:
                live_samples.append(time_interleaved([r], reps=reps, warmup=warmup, min_time_s=min_time_s)[0])
            except Exception as exc:  # noqa: BLE001
                _record_failure(failures, case, r.impl.name, mode, exc, log)
                live_samples.append(None)
    it = iter(live_samples)
    samples = [next(it) if r is not None else None for r in runners]
    runners = [r if s is not None else None for r, s in zip(runners, samples)]
    return runners, samples


def _record_failure(failures, case, impl_name, stage, exc, log):
    msg = f"{type(exc).__name__}: {exc}"
    log(f"  FAILED {case.name} [{impl_name}] {stage}: {msg}")
    if failures is not None:
        failures.append({"case": case.name, "op": case.op, "impl": impl_name, "stage": stage, "error": msg,
                         "traceback": traceback.format_exc(limit=8)})


def baseline_key(rec: dict) -> str | None:
    """The name a record is compared under in ``ratio_vs`` (the reference backend is the eager baseline)."""
    if rec["kind"] == "baseline":
        return rec["impl"]
    if rec["impl"] == "reference":
        return "eager_reference"
    return None


def _fill_ratios(mode_records: list[dict]) -> None:
    bases = {baseline_key(r): r for r in mode_records if baseline_key(r)}
    for rec in mode_records:
        rec["ratio_vs"] = {name: b["p50_ms"] / rec["p50_ms"] for name, b in bases.items() if b is not rec}


def _fill_floor_fractions(records: list[dict], cases: dict[str, Case], floors: dict) -> None:
    for rec in records:
        if "GBps" in rec:
            rec["floor_fraction"] = rec["GBps"] / floors["copy_GBps"]
            rec["floor"] = "copy_GBps"
        elif "TFLOPs" in rec:
            key = _floor_key(cases[rec["case"]])
            rec["floor_fraction"] = rec["TFLOPs"] / floors[key] if key in floors else None
            if key in floors:
                rec["floor"] = key


def run_suite(cases: list[Case], *, suite: str, device="cpu", reps: int = 10, warmup: int = 2,
              compile: bool | Callable[[Case], bool] = False, min_time_s: float = 0.0,
              log: Callable[[str], None] = print, floor_reps: int = 5, keep_going: bool = False,
              checkpoint: Callable[[dict], None] | None = None, measure_memory: bool = True) -> dict:
    """Floors, then every case; returns the run's record.

    compile: a bool, or a predicate choosing the cases that also time torch.compile of the reference.
    checkpoint: called with the record so far after the floors and after each mode of each case
    (``complete`` is false until the end), so a run cut short still leaves what it finished."""
    device = torch.device(device)
    log(f"perf: measuring floors on {device}")
    floors = measure_floors(device, reps=floor_reps)
    by_name = {c.name: c for c in cases}
    record = {"suite": suite, "device": device.type, "device_class": device_class(device),
              "device_name": device_name(device), "versions": versions(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "settings": {"reps": reps, "warmup": warmup, "min_time_s": min_time_s,
                           "compile": sorted(c.name for c in cases if _wants_compile(compile, c)),
                           "argv": sys.argv[1:]},
              "floors": floors, "results": [], "failures": [], "complete": False}
    if checkpoint:
        checkpoint(record)
    for case in cases:
        log(f"perf: {case.name} ({case.op} {case.shape} {case.dtype})")

        def partial(recs: list[dict]) -> None:
            if checkpoint:
                _fill_floor_fractions(recs, by_name, floors)
                checkpoint({**record, "results": record["results"] + recs})

        try:
            recs = run_case(case, device, reps=reps, warmup=warmup, compile=_wants_compile(compile, case),
                            min_time_s=min_time_s, log=log, keep_going=keep_going, failures=record["failures"],
                            measure_memory=measure_memory, on_mode=partial)
        except Exception as exc:  # noqa: BLE001 - recorded with its traceback when keep_going, else re-raised
            if not keep_going:
                raise
            _record_failure(record["failures"], case, "*", "case", exc, log)
            recs = []
        _fill_floor_fractions(recs, by_name, floors)
        record["results"] += recs
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if checkpoint:
            checkpoint(record)
    record["complete"] = True
    return record


def _wants_compile(compile, case: Case) -> bool:
    return bool(compile(case)) if callable(compile) else bool(compile)

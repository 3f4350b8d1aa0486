"""Kernel perf harness: check every implementation against the reference, then time it.

For each case (``perf/cases.py``) and each implementation (the op's usable backends and the
public baselines):

1. Correctness first, on seeded inputs: the reference backend run in float64 is the oracle. VQ
   backends must return exactly the oracle's indices (a baseline such as cdist+argmin may differ
   only on near-ties, within float32 rounding of the distances); float outputs, and for backward
   modes the input gradients under a random upstream gradient, must satisfy
   ``max|impl - oracle| <= 4 x max|reference_same_dtype - oracle| + 16 ulp x max|oracle|``.
   A failure raises :class:`CorrectnessError` and nothing is timed for that implementation.
2. Timing per mode, interleaved: the implementations of a (case, mode) take turns in rounds, so a
   load change on the machine hits them alike. ``fwd`` runs under ``torch.no_grad``; ``bwd`` times
   ``torch.autograd.grad`` with a seeded random upstream gradient on a graph saved by an untimed
   forward just before (a fresh one per call: compiled backwards cannot be replayed); ``fwd+bwd``
   times both. Warm-up calls first, then ``reps`` timed calls (``time.perf_counter``;
   ``torch.cuda.synchronize`` around each on CUDA; ``min_time_s`` raises the reps of
   sub-millisecond calls, up to 10x, so the group runs that long). p20/p50/p80 in ms.
3. Derived numbers: TFLOP/s for attention (the frame-causal part only: sum over frames t of
   4 N * (t+1) N * D per (batch, head) forward; backward counted as 2x forward, no recompute) and
   VQ (2 M K D; the forward search only); GB/s for AdaLN (bytes of inputs + outputs: forward reads
   the inputs and writes the output; backward reads the upstream gradient and the inputs and
   writes one gradient per input). ``floor_fraction`` divides by the floors measured in the same
   run: copy bandwidth (a 256 MiB ``Tensor.copy_``, read + write counted) and the matmul rate of
   the case's dtype. The copy floor is a DRAM rate: an AdaLN case whose few MB stay in cache can
   exceed it (floor_fraction > 1), which says the case is cache-resident, not that it beat the floor.
4. Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over one extra call of the mode,
   minus what was allocated before it (inputs, and for ``bwd`` the saved graph, excluded). On CPU
   PyTorch keeps no allocator statistics, and an RSS high-water mark inside this process would
   reflect earlier cases (glibc keeps freed pages), so ``peak_mem_bytes`` is null with
   ``peak_mem_note`` saying why.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from perf.cases import Case, Impl

REPO = Path(__file__).resolve().parent.parent
REF_FACTOR, ULPS = 4.0, 16.0
CPU_MEM_NOTE = ("not measured on CPU: PyTorch keeps no CPU allocator statistics and the process RSS "
                "high-water mark includes earlier cases")


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


# ============================================================================ floors
def measure_floors(device, *, reps: int = 5) -> dict:
    """Copy bandwidth and matmul rates on ``device``, measured now (the same run as the cases)."""
    device = torch.device(device)

    def best(fn) -> float:
        fn()
        _sync(device)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return quantile(times, 0.5)

    n = 64 * 1024 * 1024  # 256 MiB of fp32
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    copy_s = best(lambda: dst.copy_(src))
    floors = {"copy_GBps": 2 * src.nbytes / copy_s / 1e9}
    del src, dst
    size = 8192 if device.type == "cuda" else 2048
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" or _cpu_has_bf16() else [])
    for dtype in dtypes:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        secs = best(lambda: torch.mm(a, b))
        floors[f"matmul_{_dtype_name(dtype)}_TFLOPs"] = 2 * size**3 / secs / 1e12
    floors["method"] = f"copy_: 2 x 256 MiB fp32 per call; matmul: {size}^3 mm; p50 of {reps}"
    return floors


def _cpu_has_bf16() -> bool:
    try:
        return "amx" in open("/proc/cpuinfo").read() or "avx512_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}[dtype]


# ============================================================================ correctness
def _err(a: torch.Tensor, oracle: torch.Tensor) -> float:
    return (a.detach().to(torch.float64) - oracle.detach().to(torch.float64)).abs().max().item()


def _outputs_and_grads(fn: Callable, inputs, grad: bool, upstream=None):
    if not grad:
        with torch.no_grad():
            return fn(*inputs), None, None
    out = fn(*inputs)
    up = _upstream(out) if upstream is None else upstream.to(out.dtype)
    grads = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], up)
    return out, grads, up


def check_correctness(case: Case, impl: Impl, device, *, seed: int = 0) -> dict:
    """Raise CorrectnessError unless ``impl`` matches the reference on ``case``'s seeded inputs.

    Returns the largest error found and what was allowed (for the record)."""
    device = torch.device(device)
    ref_fn = case.backend_fn("reference")
    inputs = case.make_inputs(device, seed=seed)
    if case.op == "vq_lookup":
        with torch.no_grad():
            want = ref_fn(*inputs)
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
    oracle_in = _detached(inputs, torch.float64)
    o_out, o_grads, up = _outputs_and_grads(ref_fn, oracle_in, grad)
    r_out, r_grads, _ = _outputs_and_grads(ref_fn, _detached(inputs), grad, up)
    i_out, i_grads, _ = _outputs_and_grads(impl.fn, _detached(inputs), grad, up)
    named = [("output", i_out, r_out, o_out)]
    if grad:
        named += [(f"grad[{i}]", a, b, c) for i, (a, b, c) in enumerate(zip(i_grads, r_grads, o_grads))]
    worst = {"max_err": 0.0, "allowed": None}
    eps = torch.finfo(case.torch_dtype).eps
    for what, actual, ref, oracle in named:
        if actual.shape != oracle.shape or actual.dtype != ref.dtype:
            raise CorrectnessError(f"{case.name}[{impl.name}] {what}: {tuple(actual.shape)} {actual.dtype}, "
                                   f"want {tuple(oracle.shape)} {ref.dtype}")
        err, ref_err = _err(actual, oracle), _err(ref, oracle)
        allowed = REF_FACTOR * ref_err + ULPS * eps * oracle.abs().max().item()
        if not err <= allowed:  # NaN fails too
            raise CorrectnessError(f"{case.name}[{impl.name}] {what}: max |impl - fp64 oracle| = {err:.3e} > allowed "
                                   f"{allowed:.3e} ({REF_FACTOR} x reference error {ref_err:.3e} + {ULPS} ulp)")
        if err >= worst["max_err"]:
            worst = {"max_err": err, "allowed": allowed}
    return worst


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
        if self.mode in ("bwd", "fwd+bwd"):
            self.up = _upstream(self.impl.fn(*self.inputs))

    def prepare(self):
        """Untimed set-up of one call: for ``bwd`` a fresh graph (compiled backwards may not be
        replayed with retain_graph, so every timed backward gets its own forward)."""
        return self.impl.fn(*self.inputs) if self.mode == "bwd" else None

    def call(self, graph=None):
        if self.mode == "fwd":
            with torch.no_grad():
                return self.impl.fn(*self.inputs)
        if self.mode == "bwd":
            return torch.autograd.grad(graph, self.grad_inputs, self.up)
        out = self.impl.fn(*self.inputs)
        return torch.autograd.grad(out, self.grad_inputs, self.up)

    def step(self) -> float:
        graph = self.prepare()
        _sync(self.device)
        t0 = time.perf_counter()
        self.call(graph)
        _sync(self.device)
        return time.perf_counter() - t0

    def peak_mem(self) -> int | None:
        if self.device.type != "cuda":
            return None
        graph = self.prepare()
        _sync(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.call(graph)
        _sync(self.device)
        return int(torch.cuda.max_memory_allocated(self.device) - before)


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


# ============================================================================ suite
def versions() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        sha += "-dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        sha = None
    return {"torch": torch.__version__, "python": platform.python_version(), "lam_fast_git_sha": sha,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


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


def run_case(case: Case, device, *, reps: int, warmup: int, compile: bool = False, impls: list[Impl] | None = None,
             min_time_s: float = 0.0, log: Callable[[str], None] = print) -> list[dict]:
    """Check, then time every implementation of ``case`` in every mode; one record per (impl, mode)."""
    device = torch.device(device)
    impls = case.impls(device, compile=compile) if impls is None else impls
    checked = []
    for impl in impls:
        info = check_correctness(case, impl, device)  # raises: a wrong implementation is never timed
        checked.append((impl, info))
    records = []
    for mode in case.modes:
        active = [(impl, info) for impl, info in checked if mode in impl.modes]
        runners = [_Runner(impl, mode, case.make_inputs(device), device) for impl, _ in active]
        samples = time_interleaved(runners, reps=reps, warmup=warmup, min_time_s=min_time_s)
        unit_work = work(case, mode)
        for (impl, info), runner, secs in zip(active, runners, samples):
            p20, p50, p80 = (quantile(secs, q) * 1e3 for q in (0.2, 0.5, 0.8))
            rec = {"case": case.name, "op": case.op, "impl": impl.name, "kind": impl.kind, "shape": dict(case.shape),
                   "dtype": case.dtype, "mode": mode, "p20_ms": p20, "p50_ms": p50, "p80_ms": p80, "reps": len(secs),
                   "ratio_vs": {}, "floor_fraction": None, "peak_mem_bytes": runner.peak_mem(),
                   "correctness": info, "main_baseline": case.main_baseline}
            if rec["peak_mem_bytes"] is None:
                rec["peak_mem_note"] = CPU_MEM_NOTE
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
                log(f"  {case.name:28s} {mode:8s} {r['impl']:18s} p50 {r['p50_ms']:9.3f} ms")
    return records


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
        elif "TFLOPs" in rec:
            key = _floor_key(cases[rec["case"]])
            rec["floor_fraction"] = rec["TFLOPs"] / floors[key] if key in floors else None


def run_suite(cases: list[Case], *, suite: str, device="cpu", reps: int = 10, warmup: int = 2, compile: bool = False,
              min_time_s: float = 0.0, log: Callable[[str], None] = print, floor_reps: int = 5) -> dict:
    device = torch.device(device)
    log(f"perf: measuring floors on {device}")
    floors = measure_floors(device, reps=floor_reps)
    results = []
    for case in cases:
        log(f"perf: {case.name} ({case.op} {case.shape} {case.dtype})")
        results += run_case(case, device, reps=reps, warmup=warmup, compile=compile, min_time_s=min_time_s, log=log)
    _fill_floor_fractions(results, {c.name: c for c in cases}, floors)
    return {"suite": suite, "device": device.type, "device_name": device_name(device), "versions": versions(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "settings": {"reps": reps, "warmup": warmup, "min_time_s": min_time_s, "compile": compile,
                         "argv": sys.argv[1:]},
            "floors": floors, "results": results}

"""The kernel perf tools (perf/harness.py, run.py, compare.py, summary.py, gpu_check.sh) on the tiny
case set. No timing asserted."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf import compare as compare_mod  # noqa: E402
from perf import harness  # noqa: E402
from perf import summary as summary_mod  # noqa: E402
from perf.cases import SETS, Case, Impl, get_set  # noqa: E402
from perf.harness import (CorrectnessError, baseline_key, check_correctness, quadratic_bytes, run_case,  # noqa: E402
                          run_suite)

FIELDS = {"case", "op", "impl", "kind", "shape", "dtype", "mode", "p20_ms", "p50_ms", "p80_ms", "ratio_vs",
          "floor_fraction", "peak_mem_bytes", "peak_rss_bytes", "out_bytes"}


@pytest.fixture(scope="module")
def tiny_run() -> dict:
    return run_suite(get_set("tiny"), suite="tiny", device="cpu", reps=3, warmup=1, log=lambda _: None, floor_reps=1)


def test_tiny_run_has_every_field(tiny_run):
    assert tiny_run["suite"] == "tiny" and tiny_run["device"] == "cpu" and tiny_run["device_name"]
    assert tiny_run["device_class"] == harness.cpu_class() and tiny_run["complete"] is True and tiny_run["failures"] == []
    assert {"torch", "python", "lam_fast_git_sha", "cuda", "triton"} <= set(tiny_run["versions"])
    assert tiny_run["floors"]["copy_GBps"] > 0 and tiny_run["floors"]["matmul_fp32_TFLOPs"] > 0
    json.dumps(tiny_run)  # one JSON record
    results = tiny_run["results"]
    for rec in results:
        assert FIELDS <= set(rec), rec
        assert rec["kind"] in ("backend", "baseline") and rec["mode"] in ("fwd", "bwd", "fwd+bwd")
        assert 0 < rec["p20_ms"] <= rec["p50_ms"] <= rec["p80_ms"]
        assert ("TFLOPs" in rec) != ("GBps" in rec)
        assert rec["floor_fraction"] is not None and rec["floor_fraction"] > 0
        # CPU peak memory: allocator events (profiler) and RSS growth, both measured
        assert isinstance(rec["peak_mem_bytes"], int) and rec["peak_mem_bytes"] >= 0, rec
        assert rec["peak_rss_bytes"] is None or rec["peak_rss_bytes"] >= 0
        assert rec["out_bytes"] > 0 and rec["peak_mem_method"]
        if rec["op"] in ("frame_causal_attention", "vq_lookup"):
            check = rec["mem_check"]
            assert check["quadratic_fp32_bytes"] == quadratic_bytes(next(c for c in get_set("tiny")
                                                                         if c.name == rec["case"]))
            assert isinstance(check["below_quadratic"], bool)
        else:
            assert "mem_check" not in rec
        assert all(v > 0 for v in rec["ratio_vs"].values())
        # Every record has a ratio, except the main baseline itself when it is the case's only one.
        assert rec["ratio_vs"] or baseline_key(rec) == rec["main_baseline"], rec
        if baseline_key(rec) != rec["main_baseline"]:
            assert rec["main_baseline"] in rec["ratio_vs"]
    seen = {(r["op"], r["impl"], r["mode"]) for r in results}
    for mode in ("fwd", "bwd", "fwd+bwd"):
        assert ("frame_causal_attention", "reference", mode) in seen
        assert ("frame_causal_attention", "sdpa_dense", mode) in seen
        assert ("adaln_zero", "reference", mode) in seen
    assert ("vq_lookup", "cdist_argmin", "fwd") in seen
    vq_ref = next(r for r in results if r["op"] == "vq_lookup" and r["impl"] == "reference")
    assert set(vq_ref["ratio_vs"]) == {"cdist_argmin"}
    attn_sdpa = next(r for r in results
                     if r["op"] == "frame_causal_attention" and r["impl"] == "sdpa" and r["mode"] == "bwd")
    assert {"sdpa_dense", "eager_reference"} <= set(attn_sdpa["ratio_vs"])


@pytest.mark.parametrize("case_name", ["attn_tiny", "adaln_tiny_zero", "adaln_tiny_gated"])
def test_correctness_check_rejects_wrong_float_impl(case_name):
    case = next(c for c in get_set("tiny") if c.name == case_name)
    good = case.backend_fn("reference")
    check_correctness(case, Impl("reference", "backend", good), "cpu")

    def off_by_a_bit(*inputs):
        return good(*inputs) * 1.001

    with pytest.raises(CorrectnessError, match=f"{case_name}\\[wrong\\] output"):
        check_correctness(case, Impl("wrong", "backend", off_by_a_bit), "cpu")

    def wrong_gradient(*inputs):  # right values, gradient scaled by 2
        out = good(*inputs)
        return out + (out - out.detach())

    with pytest.raises(CorrectnessError, match="grad"):
        check_correctness(case, Impl("wrong", "backend", wrong_gradient), "cpu")
    # A wrong implementation is never timed: run_case raises before any timing.
    with pytest.raises(CorrectnessError):
        run_case(case, "cpu", reps=1, warmup=0, impls=[Impl("wrong", "backend", off_by_a_bit)], log=lambda _: None)


def test_correctness_check_rejects_wrong_vq_indices():
    case = next(c for c in get_set("tiny") if c.op == "vq_lookup")
    good = case.backend_fn("reference")

    def shifted(x, codebook):
        idx = good(x, codebook).clone()
        idx[3] = (idx[3] + 1) % codebook.shape[0]
        return idx

    with pytest.raises(CorrectnessError, match="indices differ"):
        check_correctness(case, Impl("wrong", "backend", shifted, ("fwd",)), "cpu")
    with pytest.raises(CorrectnessError, match="indices differ"):  # a baseline gets no slack beyond near-ties
        check_correctness(case, Impl("wrong", "baseline", shifted, ("fwd",)), "cpu")
    assert check_correctness(case, Impl("cdist", "baseline", lambda x, c: torch.cdist(x, c).argmin(1), ("fwd",)),
                             "cpu")["mismatches"] == 0


def _steady(run: dict, spread: float = 0.02) -> dict:
    """A copy with a fixed p20-p80 spread, so no assertion depends on this machine's timing noise."""
    out = copy.deepcopy(run)
    for rec in out["results"]:
        rec["p20_ms"], rec["p80_ms"] = rec["p50_ms"] * (1 - spread / 2), rec["p50_ms"] * (1 + spread / 2)
    return out


def _regressed_copy(run: dict, impl: str, factor: float) -> dict:
    slow = copy.deepcopy(run)
    for rec in slow["results"]:
        if rec["impl"] == impl and rec["kind"] == "backend":
            rec["ratio_vs"] = {k: v / factor for k, v in rec["ratio_vs"].items()}
    return slow


def test_compare_flags_regression_and_passes_identical(tiny_run, tmp_path):
    tiny_run = _steady(tiny_run)
    rows, notes = compare_mod.compare(tiny_run, tiny_run, 0.15)
    assert rows and all(r["status"] == "OK" for r in rows) and not notes

    slow = _regressed_copy(tiny_run, "cpp", 1e3)  # cpp now 1000x worse relative to its baselines
    rows, _ = compare_mod.compare(slow, tiny_run, 0.15)
    assert {r["status"] for r in rows if r["impl"] == "cpp"} == {"REGRESSED"}
    assert {r["status"] for r in rows if r["impl"] != "cpp"} == {"OK"}
    rows, _ = compare_mod.compare(tiny_run, slow, 0.15)
    assert {r["status"] for r in rows if r["impl"] == "cpp"} == {"IMPROVED"}

    # Entries present on one side only are listed and ignored.
    partial = copy.deepcopy(tiny_run)
    partial["results"] = [r for r in partial["results"] if r["op"] != "vq_lookup"]
    rows, notes = compare_mod.compare(partial, tiny_run, 0.15)
    assert all(r["status"] == "OK" for r in rows) and any("vq_tiny" in n and "only in the baseline" in n for n in notes)

    # The command line: exit 1 on a regression, 0 on an identical run.
    base_path, run_path, slow_path = tmp_path / "base.json", tmp_path / "run.json", tmp_path / "slow.json"
    base_path.write_text(json.dumps(tiny_run))
    run_path.write_text(json.dumps(tiny_run))
    slow_path.write_text(json.dumps(slow))
    script = str(REPO / "perf" / "compare.py")
    ok = subprocess.run([sys.executable, script, str(run_path), str(base_path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, script, str(slow_path), str(base_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "REGRESSED" in bad.stdout, bad.stdout + bad.stderr


def test_compare_gates_only_our_kernels_and_only_within_a_device_class(tiny_run, tmp_path):
    """A regression of something that is not our code (the SDPA backend against FlexAttention) is listed,
    never gated; a run is gated against the baseline of its own class, picked from a directory."""
    steady = _steady(tiny_run)
    script = str(REPO / "perf" / "compare.py")
    not_ours = _regressed_copy(_regressed_copy(steady, "sdpa", 1e3), "reference", 1e3)
    rows, _ = compare_mod.compare(not_ours, steady, 0.15)
    assert {(r["impl"], r["gated"]) for r in rows if r["status"] == "REGRESSED"} == {("sdpa", False), ("reference", False)}
    assert all(r["gated"] == (r["impl"] in {"cpp", "triton", "cuda"}) for r in rows)
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    (baselines / f"{steady['device_class']}.json").write_text(json.dumps(steady))
    run = tmp_path / "run.json"
    run.write_text(json.dumps(not_ours))
    res = subprocess.run([sys.executable, script, str(run), str(baselines)], capture_output=True, text=True)
    assert res.returncode == 0 and "info: regressed" in res.stdout, res.stdout + res.stderr
    run.write_text(json.dumps(_regressed_copy(steady, "cpp", 1e3)))
    res = subprocess.run([sys.executable, script, str(run), str(baselines)], capture_output=True, text=True)
    assert res.returncode == 1 and "REGRESSED" in res.stdout, res.stdout + res.stderr
    # another machine class: no stored baseline there, or a baseline file of another class: listed, not gated
    other = {**_regressed_copy(steady, "cpp", 1e3), "device_class": "cpu-other-base-64c"}
    run.write_text(json.dumps(other))
    res = subprocess.run([sys.executable, script, str(run), str(baselines)], capture_output=True, text=True)
    assert res.returncode == 0 and "no stored baseline for device class cpu-other-base-64c" in res.stdout, res.stdout
    res = subprocess.run([sys.executable, script, str(run), str(baselines / f"{steady['device_class']}.json")],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "nothing gated" in res.stdout and "info: regressed" in res.stdout, res.stdout


def test_cpu_class_names_vendor_isa_and_cores():
    cls = harness.cpu_class()
    vendor, isa, cores = cls.split("-")[1:]
    assert cls.startswith("cpu-") and vendor in {"intel", "amd", "other"}
    assert isa in {"amx", "avx512bf16", "avx512", "avx2", "base"} and cores == f"{os.cpu_count()}c"


def test_noise_band_is_at_least_tolerance_and_widens_with_spread(tiny_run):
    steady = _steady(tiny_run)
    rows, _ = compare_mod.compare(_regressed_copy(steady, "cpp", 1.3), steady, 0.15)  # 30% worse, quiet runs
    assert all(r["band"] == 0.15 for r in rows)
    assert {r["status"] for r in rows if r["impl"] == "cpp"} == {"REGRESSED"}
    noisy = _steady(tiny_run, spread=1.0)  # p20-p80 = p50 +- 50%: band = 4 x 0.5 = 2 (within 3x)
    rows, _ = compare_mod.compare(_regressed_copy(noisy, "cpp", 1.3), noisy, 0.15)
    assert rows and all(abs(r["band"] - 2.0) < 1e-9 for r in rows)
    assert {r["status"] for r in rows} == {"OK"}
    rows, _ = compare_mod.compare(_regressed_copy(noisy, "cpp", 10.0), noisy, 0.15)  # beyond any band
    assert {r["status"] for r in rows if r["impl"] == "cpp"} == {"REGRESSED"}


# ---------------------------------------------------------------------------- peak memory
def test_peak_memory_flags_a_quadratic_working_set():
    """At L = 1024 one fp32 L x L matrix is 4 MiB: the eager reference builds the full score matrix
    (and more), the fused C++ kernel stays far below it; the allocator sees the reference's scores."""
    case = Case("attn_mem", "frame_causal_attention", dict(B=1, H=1, T=8, N=128, D=8), modes=("fwd",))
    quad = quadratic_bytes(case)
    assert quad == 4 * 1024 * 1024
    fused = [b for b in case.backends("cpu") if b == "cpp"]  # the sdpa backend passes a dense mask: not fused
    impls = [Impl(b, "backend", case.backend_fn(b), ("fwd",)) for b in ["reference", *fused]]
    recs = {r["impl"]: r for r in run_case(case, "cpu", reps=1, warmup=0, impls=impls, log=lambda _: None)}
    ref = recs["reference"]
    assert ref["peak_mem_bytes"] >= quad and not ref["mem_check"]["below_quadratic"], ref
    assert ref["mem_check"]["working_bytes"] >= quad
    for b in fused:
        assert recs[b]["mem_check"]["below_quadratic"], recs[b]
        assert recs[b]["peak_mem_bytes"] < quad


def test_keep_going_records_a_failing_impl_and_times_the_rest():
    case = next(c for c in get_set("tiny") if c.name == "adaln_tiny_gated")
    good = case.backend_fn("reference")
    wrong = Impl("wrong", "backend", lambda *a: good(*a) * 1.001)
    crash = Impl("crash", "backend", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    failures: list[dict] = []
    recs = run_case(case, "cpu", reps=1, warmup=0, impls=[Impl("reference", "backend", good), wrong, crash],
                    log=lambda _: None, keep_going=True, failures=failures, measure_memory=False)
    assert {r["impl"] for r in recs} == {"reference"}
    assert [(f["impl"], f["stage"]) for f in failures] == [("wrong", "check"), ("crash", "check")]
    assert "CorrectnessError" in failures[0]["error"] and "boom" in failures[1]["error"]


# ---------------------------------------------------------------------------- sets
def test_gpu_sets_have_the_target_shapes():
    """The GPU sets are only built here (timing them needs CUDA): the issue's target shapes and baselines."""
    gpu = {c.op: c for c in get_set("gpu")}
    assert gpu["frame_causal_attention"].shape == dict(B=8, H=16, T=8, N=256, D=64)
    assert gpu["frame_causal_attention"].dtype == "bfloat16"
    assert gpu["frame_causal_attention"].main_baseline == "flex_attention"
    assert gpu["adaln_zero"].shape["C"] == 1024 and gpu["adaln_zero"].main_baseline == "compile_reference"
    assert gpu["vq_lookup"].shape["K"] == 32768 and gpu["vq_lookup"].main_baseline == "cdist_argmin"
    model = get_set("model-gpu")
    assert {c.shape.get("K") for c in model if c.op == "vq_lookup"} == {1024, 8192, 32768}
    assert sum(c.op == "frame_causal_attention" for c in model) == 5
    for name in SETS:  # names are unique within a set (the same case keeps its name across sets)
        assert len({c.name for c in get_set(name)}) == len(get_set(name)), name
    assert {c.name for c in get_set("gpu")} <= {c.name for c in model}
    # On CPU the attention case's impls include the FlexAttention baseline (forward only) and no GPU-only one.
    names = {i.name: i for i in gpu["frame_causal_attention"].impls("cpu")}
    assert "sdpa_dense" in names and "flash_attn" not in names and "xformers" not in names
    if "flex_attention" in names:
        assert names["flex_attention"].modes == ("fwd",)


# ---------------------------------------------------------------------------- run.py, compare, summary
def _run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "perf" / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_run_cli_ops_filter_checkpoints_and_floors_only(tmp_path):
    out = tmp_path / "vq.json"
    res = _run_cli("--set", "tiny", "--ops", "vq_lookup", "--reps", "2", "--warmup", "0", "--min-time", "0",
                   "--json", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    rec = json.loads(out.read_text())
    assert rec["complete"] and {r["op"] for r in rec["results"]} == {"vq_lookup"}
    assert "USDT" not in res.stderr  # the profiler's start/stop lines are filtered
    assert "<L^2|MK" in res.stdout and "peak MiB" in res.stdout
    floors = tmp_path / "floors.json"
    res = _run_cli("--floors-only", "--json", str(floors))
    assert res.returncode == 0, res.stdout + res.stderr
    rec = json.loads(floors.read_text())
    assert rec["results"] == [] and rec["floors"]["copy_GBps"] > 0
    assert _run_cli("--set", "tiny", "--ops", "nope").returncode == 2


def test_checkpoint_sees_every_mode_of_every_case():
    seen = []
    cases = [c for c in get_set("tiny") if c.op in ("vq_lookup", "gated_residual")]
    run_suite(cases, suite="tiny", reps=1, warmup=0, log=lambda _: None, floor_reps=1, measure_memory=False,
              checkpoint=lambda rec: seen.append((rec["complete"], len(rec["results"]))))
    n_modes = sum(len(c.modes) for c in cases)  # after the floors, after each mode and after each case
    assert [done for done, _ in seen] == [False] * (1 + n_modes + len(cases))
    assert [n for _, n in seen] == sorted(n for _, n in seen) and seen[0][1] == 0 and seen[-1][1] > 0


def test_compare_fails_an_incomplete_or_failing_run(tiny_run, tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_steady(tiny_run)))
    script = str(REPO / "perf" / "compare.py")
    for change in ({"complete": False}, {"failures": [{"case": "x", "impl": "y", "stage": "check", "error": "z"}]}):
        run = tmp_path / "run.json"
        run.write_text(json.dumps({**_steady(tiny_run), **change}))
        res = subprocess.run([sys.executable, script, str(run), str(base)], capture_output=True, text=True)
        assert res.returncode == 1 and "REGRESSED" not in res.stdout, res.stdout


def test_summary_targets_memory_and_merge(tiny_run, tmp_path):
    s = summary_mod.summarise([tiny_run])
    ops = {r["op"] for r in s["targets"]}
    assert ops == {"frame_causal_attention", "adaln_zero", "vq_lookup"}
    assert all(r["info_only"] for r in s["targets"])  # a CPU run: the GPU targets are information only
    assert all(r["impl"] != "reference" for r in s["targets"])
    # CPU FlexAttention has no backward: that target is N/A there, not FAIL
    assert {r["status"] for r in s["targets"] if r["metric"] == "vs flex_attention" and r["mode"] != "fwd"} <= {"N/A"}
    assert {(m["case"], m["impl"]) for m in s["memory"]} >= {("attn_tiny", "reference"), ("vq_tiny", "cdist_argmin")}
    text = summary_mod.format_summary(s)
    assert "== targets" in text and "== memory" in text

    # A fake H100 run: targets count, the best backend is named, --strict fails on a missed target.
    # The numbers are set here, not measured: nothing depends on how fast this machine is.
    h100 = copy.deepcopy(tiny_run)
    h100["device_class"] = "h100"
    for rec in h100["results"]:
        if rec["op"] == "vq_lookup":
            rec["shape"]["K"] = summary_mod.VQ_TARGET_K
            rec["ratio_vs"]["cdist_argmin"] = 6.0 if rec["impl"] == "cpp" else 0.5
        if rec["op"] == "frame_causal_attention":  # every backend under both attention targets
            rec["ratio_vs"]["flex_attention"] = 0.5 * summary_mod.ATTN_VS_FLEX
            rec["floor_fraction"] = 0.5 * summary_mod.ATTN_FLOOR
    s = summary_mod.summarise([h100])
    vq_best = next(b for b in s["best"] if b["case"] == "vq_tiny")
    assert vq_best == {"case": "vq_tiny", "mode": "fwd", "impl": "cpp", "status": "PASS", "info_only": False}
    missed = [b for b in s["best"] if b["case"] == "attn_tiny"]
    assert missed and all(b["status"] == "FAIL" and not b["info_only"] for b in missed)
    problems = summary_mod.strict_problems(s)
    assert any(p.startswith("target attn_tiny") for p in problems)
    assert not any(p.startswith("target vq_tiny") for p in problems)

    part = copy.deepcopy(tiny_run)
    part["results"] = [r for r in part["results"] if r["op"] == "vq_lookup"]
    rest = copy.deepcopy(tiny_run)
    rest["results"] = [r for r in rest["results"] if r["op"] != "vq_lookup"]
    rest["complete"] = False
    merged = summary_mod.merge([part, rest, {"suite": "floors", "floors": {}, "results": []}])
    assert len(merged["results"]) == len(tiny_run["results"]) and merged["complete"] is False
    paths = []
    for i, rec in enumerate((part, rest)):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(rec))
    res = subprocess.run([sys.executable, str(REPO / "perf" / "summary.py"), *map(str, paths), "--merge",
                          str(tmp_path / "m.json"), "--strict"], capture_output=True, text=True)
    assert res.returncode == 1 and "incomplete" in res.stdout, res.stdout  # rest is incomplete
    assert len(json.loads((tmp_path / "m.json").read_text())["results"]) == len(tiny_run["results"])


# ---------------------------------------------------------------------------- gpu_check.sh
def test_gpu_check_script_parses_and_is_executable():
    script = REPO / "perf" / "gpu_check.sh"
    assert script.stat().st_mode & 0o111, "perf/gpu_check.sh must be executable"
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = script.read_text()
    for needle in ("GPU_CHECK_DRY_RUN", "timeout", "$OUT", "--floors-only", "pytest", "-m gpu", "summary.py"):
        assert needle in text, needle


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    """The whole script on CPU (tiny set, no build, kernel tests collected only): ~1-2 minutes."""
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(REPO / "perf" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                         timeout=600)
    steps = {line.split("\t")[0]: line.split("\t")[1] for line in (tmp_path / "steps.tsv").read_text().splitlines()[1:]}
    for step in ("env", "build-check", "tests-gpu", "floors", "perf-attention", "perf-adaln", "perf-vq",
                 "tests-kernels", "summary"):
        log = tmp_path / f"{step}.log"
        assert steps[step].startswith("ok"), (step, steps, log.read_text()[-3000:] if log.exists() else "no log")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in ("floors.json", "perf-attention.json", "perf-adaln.json", "perf-vq.json", "perf-gpu.json",
                 "summary.txt", "summary.json", "gpu_check.log"):
        assert (tmp_path / name).is_file(), name
    merged = json.loads((tmp_path / "perf-gpu.json").read_text())
    assert {r["op"] for r in merged["results"]} == {"frame_causal_attention", "adaln_zero", "vq_lookup"}
    assert any(r["impl"] == "compile_reference" for r in merged["results"])
    assert "== targets" in (tmp_path / "summary.txt").read_text()


def test_bench_planning_runs_and_both_modes_agree(tmp_path):
    """perf/bench_planning.py on a toy CEM: same plan with and without the KV cache, JSON written."""
    out = tmp_path / "planning.json"
    subprocess.run([sys.executable, "perf/bench_planning.py", "--samples", "6", "--elites", "2", "--iterations", "1",
                    "--context", "2", "--rounds", "1", "--json", str(out)], check=True, capture_output=True)
    record = json.loads(out.read_text())
    assert record["same_plan"] is True
    assert record["ratio_recompute_over_cached"] > 0
    assert set(record["seconds"]) == {"cached", "recompute"}


def test_harness_and_tests_share_one_tolerance_rule():
    import tolerance as tests_tolerance

    from lam_fast.ops import tolerance

    assert harness.allowed_error is tolerance.allowed_error is tests_tolerance.allowed_error
    assert tolerance.allowed_error(1.0, 2.0, torch.float32) == 2.0 + 4 * torch.finfo(torch.float32).eps * 2.0

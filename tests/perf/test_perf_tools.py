"""The kernel perf tools (perf/harness.py, perf/compare.py) on the tiny case set. No timing asserted."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf import compare as compare_mod  # noqa: E402
from perf.cases import Impl, get_set  # noqa: E402
from perf.harness import CorrectnessError, baseline_key, check_correctness, run_case, run_suite  # noqa: E402

FIELDS = {"case", "op", "impl", "kind", "shape", "dtype", "mode", "p20_ms", "p50_ms", "p80_ms", "ratio_vs",
          "floor_fraction", "peak_mem_bytes"}


@pytest.fixture(scope="module")
def tiny_run() -> dict:
    return run_suite(get_set("tiny"), suite="tiny", device="cpu", reps=3, warmup=1, log=lambda _: None, floor_reps=1)


def test_tiny_run_has_every_field(tiny_run):
    assert tiny_run["suite"] == "tiny" and tiny_run["device"] == "cpu" and tiny_run["device_name"]
    assert {"torch", "python", "lam_fast_git_sha"} <= set(tiny_run["versions"])
    assert tiny_run["floors"]["copy_GBps"] > 0 and tiny_run["floors"]["matmul_fp32_TFLOPs"] > 0
    json.dumps(tiny_run)  # one JSON record
    results = tiny_run["results"]
    for rec in results:
        assert FIELDS <= set(rec), rec
        assert rec["kind"] in ("backend", "baseline") and rec["mode"] in ("fwd", "bwd", "fwd+bwd")
        assert 0 < rec["p20_ms"] <= rec["p50_ms"] <= rec["p80_ms"]
        assert ("TFLOPs" in rec) != ("GBps" in rec)
        assert rec["floor_fraction"] is not None and rec["floor_fraction"] > 0
        assert rec["peak_mem_bytes"] is None and rec["peak_mem_note"]  # CPU: documented null
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

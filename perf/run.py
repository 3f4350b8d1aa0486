"""Run a kernel perf case set and write one JSON record (see perf/harness.py for what is measured).

    python perf/run.py --set tiny|quick|model|gpu|model-gpu [--device cpu|cuda] [--ops OP,...]
                       [--reps N] [--warmup N] [--min-time S] [--compile [OP,...]] [--keep-going]
                       [--floors-only] [--json PATH]

Default JSON path: perf/results/<set>-<device>.json, rewritten after every mode of every case
(``complete`` is false until the run ends, so a run cut short by a timeout leaves what it finished). Prints a
table: case, mode, impl, p50 ms, ratio to the case's main baseline (> 1 means faster than it) and
to the eager reference, rate, fraction of the floor, peak memory and, for attention and VQ,
whether the working memory stays below one fp32 L x L / M x K matrix. Compare a run with the stored
one of its device class (perf/baselines/<device_class>.json) with perf/compare.py; check the GPU
targets with perf/summary.py. Nothing here asserts a time.

--compile: also time torch.compile of the reference (slow on CPU: ~25 s per compile); alone it
applies to every case, with a comma list only to those ops (e.g. ``--compile adaln_zero``).
--keep-going: an implementation that fails its correctness check or raises is listed under
``failures`` in the record and skipped; the exit status is 1 if there was any.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from lam_fast.io import write_json_atomic  # noqa: E402
from perf.cases import SETS, get_set  # noqa: E402
from perf.harness import device_class, device_name, measure_floors, run_suite, versions  # noqa: E402

OPS = ("frame_causal_attention", "adaln_zero", "adaln_modulate", "gated_residual", "vq_lookup")


def _mib(n) -> str:
    return f"{n / 2**20:.1f}" if n is not None else "-"


def format_table(record: dict) -> str:
    rows = [("case", "mode", "impl", "kind", "p50 ms", "p20-p80 ms", "vs main", "vs eager", "rate", "floor",
             "peak MiB", "<L^2|MK")]
    for r in record["results"]:
        main = r["ratio_vs"].get(r["main_baseline"])
        eager = r["ratio_vs"].get("eager_reference")
        rate = f"{r['TFLOPs']:.3f} TFLOP/s" if "TFLOPs" in r else (f"{r['GBps']:.1f} GB/s" if "GBps" in r else "-")
        floor = f"{r['floor_fraction']:.2f}" if r.get("floor_fraction") is not None else "-"
        peak = r.get("peak_mem_bytes")
        if peak is not None and r.get("peak_rss_bytes") is not None:
            peak = max(peak, r["peak_rss_bytes"])
        check = r.get("mem_check")
        below = "-" if check is None else ("yes" if check["below_quadratic"] else "NO")
        rows.append((r["case"], r["mode"], r["impl"], r["kind"], f"{r['p50_ms']:.3f}",
                     f"{r['p20_ms']:.3f}-{r['p80_ms']:.3f}",
                     f"{main:.2f}x" if main is not None else f"({r['main_baseline']})",
                     f"{eager:.2f}x" if eager is not None else "-", rate, floor, _mib(peak), below))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _comma_list(value: str | None, known, what: str) -> set[str] | None:
    if value is None or value == "all":
        return None
    names = {v for v in value.split(",") if v}
    unknown = names - set(known)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {sorted(unknown)}; known: {list(known)}")
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="quick", choices=sorted(SETS))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--ops", default=None, help=f"only cases of these ops (comma list of {', '.join(OPS)})")
    p.add_argument("--reps", type=int, default=10, help="timed calls per (case, impl, mode)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-time", type=float, default=1.0,
                   help="seconds each (case, mode) group should take at least: fast calls get more reps (max 10x)")
    p.add_argument("--compile", nargs="?", const="all", default=None, metavar="OPS",
                   help="also time torch.compile of the reference (all cases, or only these ops)")
    p.add_argument("--keep-going", action="store_true", help="record failing implementations instead of stopping")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory call of each (impl, mode)")
    p.add_argument("--floors-only", action="store_true", help="measure and record the floors only")
    p.add_argument("--json", type=Path, default=None, help="default perf/results/<set>-<device>.json")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    try:
        ops = _comma_list(args.ops, OPS, "op")
        compile_ops = _comma_list(args.compile, OPS, "op") if args.compile is not None else set()
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    out = args.json or REPO / "perf" / "results" / f"{args.set}-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    if args.floors_only:
        device = torch.device(args.device)
        record = {"suite": "floors", "device": device.type, "device_class": device_class(device),
                  "device_name": device_name(device), "versions": versions(), "floors": measure_floors(device),
                  "results": [], "failures": [], "complete": True,
                  "settings": {"argv": sys.argv[1:], "wall_s": round(time.perf_counter() - t0, 1)}}
        write_json_atomic(out, record)
        print(f"floors on {record['device_name']}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in record["floors"].items() if isinstance(v, float)))
        print(f"wrote {out}")
        return 0

    cases = [c for c in get_set(args.set) if ops is None or c.op in ops]
    if not cases:
        p.error(f"--ops {args.ops}: no case of set {args.set!r} matches")
    compile_pred = (lambda c: True) if compile_ops is None else (lambda c: c.op in compile_ops)
    record = run_suite(cases, suite=args.set, device=args.device, reps=args.reps, warmup=args.warmup,
                       compile=compile_pred, min_time_s=args.min_time, keep_going=args.keep_going,
                       measure_memory=not args.no_memory, checkpoint=lambda rec: write_json_atomic(out, rec))
    record["settings"]["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out, record)
    print()
    print(f"{record['suite']} on {record['device_name']} (class {record['device_class']}); floors: "
          + ", ".join(f"{k} {v:.3f}" for k, v in record["floors"].items() if isinstance(v, float)))
    print(format_table(record))
    for f in record["failures"]:
        print(f"FAILED {f['case']} [{f['impl']}] {f['stage']}: {f['error']}")
    baseline = REPO / "perf" / "baselines" / f"{record['device_class']}.json"
    print(f"\nwrote {out} ({record['settings']['wall_s']} s); stored baseline for this device class: "
          f"{baseline.relative_to(REPO)}{'' if baseline.exists() else ' (none yet)'}")
    return 1 if record["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

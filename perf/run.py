"""Run a kernel perf case set and write one JSON record (see perf/harness.py for what is measured).

    python perf/run.py --set quick|model|tiny [--device cpu|cuda] [--reps N] [--warmup N] [--min-time S]
                       [--compile] [--json PATH]

Default JSON path: perf/results/<set>-<device>.json. Prints a table: case, mode, impl, p50 ms,
ratio to the case's main baseline (sdpa_dense for attention, eager_reference for AdaLN,
cdist_argmin for VQ; > 1 means faster than it) and to the eager reference. Compare a run with a
stored one with perf/compare.py. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from perf.cases import SETS, get_set  # noqa: E402
from perf.harness import run_suite  # noqa: E402


def format_table(record: dict) -> str:
    rows = [("case", "mode", "impl", "kind", "p50 ms", "p20-p80 ms", "vs main", "vs eager", "rate", "floor")]
    for r in record["results"]:
        main = r["ratio_vs"].get(r["main_baseline"])
        eager = r["ratio_vs"].get("eager_reference")
        rate = f"{r['TFLOPs']:.3f} TFLOP/s" if "TFLOPs" in r else (f"{r['GBps']:.1f} GB/s" if "GBps" in r else "-")
        floor = f"{r['floor_fraction']:.2f}" if r.get("floor_fraction") is not None else "-"
        rows.append((r["case"], r["mode"], r["impl"], r["kind"], f"{r['p50_ms']:.3f}",
                     f"{r['p20_ms']:.3f}-{r['p80_ms']:.3f}",
                     f"{main:.2f}x" if main is not None else f"({r['main_baseline']})",
                     f"{eager:.2f}x" if eager is not None else "-", rate, floor))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="quick", choices=sorted(SETS))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--reps", type=int, default=10, help="timed calls per (case, impl, mode)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-time", type=float, default=1.0,
                   help="seconds each (case, mode) group should take at least: fast calls get more reps (max 10x)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the reference (slow on CPU)")
    p.add_argument("--json", type=Path, default=None, help="default perf/results/<set>-<device>.json")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    out = args.json or REPO / "perf" / "results" / f"{args.set}-{args.device}.json"
    t0 = time.perf_counter()
    record = run_suite(get_set(args.set), suite=args.set, device=args.device, reps=args.reps, warmup=args.warmup,
                       compile=args.compile, min_time_s=args.min_time)
    record["settings"]["wall_s"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print()
    print(f"{record['suite']} on {record['device_name']}; floors: "
          + ", ".join(f"{k} {v:.3f}" for k, v in record["floors"].items() if isinstance(v, float)))
    print(format_table(record))
    print(f"\nwrote {out} ({record['settings']['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

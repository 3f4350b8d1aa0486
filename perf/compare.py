"""Compare a perf run with a stored baseline run by ratios, not times.

    python perf/compare.py RUN.json BASELINE.json|BASELINE_DIR [--tolerance 0.15]

A directory (perf/baselines) means the stored run of the run's own device class:
``<dir>/<device_class>.json`` (perf/harness.py ``device_class``: ``cpu-intel-amx-2c``,
``cpu-amd-avx512bf16-2c``, ``h200``, ...). Ratios only hold within a machine class (AMX against
AVX-512 BF16 changes which of two matmul paths wins), so a run is gated only against a baseline
of its own class; with none stored, or a baseline file of another class, the ratios are listed
for information and nothing is gated (exit 0 unless the run itself failed).

Only our kernels are gated (:data:`GATED_IMPLS`: cpp, triton, cuda), each against the public
baselines of its case (``ratio_vs``: SDPA with the dense mask, FlexAttention, the eager and the
compiled reference, cdist+argmin). Ratios between two things that are not our code (the SDPA
backend against FlexAttention, the eager reference against cdist) are listed as ``info``: a
library release moving them says nothing about this repository.

For every entry (case, mode, impl) present in both files and every baseline name in both
entries' ``ratio_vs`` (baseline p50 / impl p50, measured side by side in one run, so the machine's
speed cancels), the new ratio is compared with the stored one. The noise band is the larger of
``--tolerance`` and the runs' own spread: for each of the four p50s involved (impl and baseline,
new and stored) half its relative p20-p80 spread, summed. A ratio below ``stored / (1 + band)`` is
REGRESSED (exit 1 when gated), above ``stored x (1 + band)`` IMPROVED, otherwise OK. Entries, or ratios,
present on one side only are listed and ignored, as are entries whose shape or dtype changed.
A run that did not complete (cut short: ``complete`` false) or that recorded failing
implementations (``--keep-going``) also exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


#: Our own kernels: the only implementations whose ratios are gated.
GATED_IMPLS = frozenset({"cpp", "triton", "cuda"})


def _key(rec: dict) -> tuple[str, str, str]:
    return rec["case"], rec["mode"], rec["impl"]


def _impl_of(baseline_name: str) -> str:
    """The impl whose record a ratio_vs key refers to (eager_reference is the reference backend)."""
    return "reference" if baseline_name == "eager_reference" else baseline_name


def _half_spread(rec: dict | None) -> float:
    if rec is None or not rec.get("p50_ms"):
        return 0.0
    return 0.5 * max(0.0, rec["p80_ms"] - rec["p20_ms"]) / rec["p50_ms"]


def compare(run: dict, base: dict, tolerance: float = 0.15) -> tuple[list[dict], list[str]]:
    """Rows {case, mode, impl, vs, stored, new, band, status} and notes on what was skipped."""
    new_recs = {_key(r): r for r in run["results"]}
    old_recs = {_key(r): r for r in base["results"]}
    rows, notes = [], []
    for key in sorted(set(new_recs) | set(old_recs)):
        new, old = new_recs.get(key), old_recs.get(key)
        if new is None or old is None:
            notes.append(f"{'/'.join(key)}: only in the {'baseline' if new is None else 'run'}; ignored")
            continue
        if new["kind"] != "backend":
            continue
        if new["shape"] != old["shape"] or new["dtype"] != old["dtype"]:
            notes.append(f"{'/'.join(key)}: shape/dtype changed ({old['shape']} {old['dtype']} -> "
                         f"{new['shape']} {new['dtype']}); ignored")
            continue
        case, mode, _ = key
        for vs in sorted(set(new["ratio_vs"]) | set(old["ratio_vs"])):
            if vs not in new["ratio_vs"] or vs not in old["ratio_vs"]:
                side = "baseline" if vs not in new["ratio_vs"] else "run"
                notes.append(f"{'/'.join(key)} vs {vs}: ratio only in the {side}; ignored")
                continue
            stored, now = old["ratio_vs"][vs], new["ratio_vs"][vs]
            spread = (_half_spread(new) + _half_spread(new_recs.get((case, mode, _impl_of(vs))))
                      + _half_spread(old) + _half_spread(old_recs.get((case, mode, _impl_of(vs)))))
            band = max(tolerance, spread)
            # Symmetric in log space: a band of 1.0 means "within 2x either way".
            status = "REGRESSED" if now < stored / (1 + band) else "IMPROVED" if now > stored * (1 + band) else "OK"
            rows.append({"case": case, "mode": mode, "impl": key[2], "vs": vs, "stored": stored, "new": now,
                         "band": band, "status": status, "gated": key[2] in GATED_IMPLS})
    return rows, notes


def _format_table(table: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def format_rows(rows: list[dict]) -> str:
    table = [("case", "mode", "impl", "vs", "stored", "new", "band", "status")]
    table += [(r["case"], r["mode"], r["impl"], r["vs"], f"{r['stored']:.3f}x", f"{r['new']:.3f}x",
               f"+-{r['band']:.0%}", r["status"] if r["gated"] else f"info: {r['status'].lower()}") for r in rows]
    return _format_table(table)


def _ratio_listing(run: dict) -> str:
    """The run's own ratios (no baseline to compare with)."""
    table = [("case", "mode", "impl", "vs", "ratio")]
    for rec in run["results"]:
        if rec["kind"] == "backend":
            table += [(rec["case"], rec["mode"], rec["impl"], vs, f"{r:.3f}x") for vs, r in sorted(rec["ratio_vs"].items())]
    return _format_table(table)


def _run_problems(run: dict) -> list[str]:
    problems = []
    if run.get("complete") is False:
        problems.append("the run did not complete (cut short): its missing cases were not compared")
    problems += [f"failed: {f['case']} [{f['impl']}] {f['stage']}: {f['error']}" for f in run.get("failures", [])]
    return problems


def _gated_regressions(run: dict, path: Path, tolerance: float) -> list[dict]:
    """Print the comparison of ``run`` with the stored run at ``path``; return the gated regressions
    (none when the stored run is of another device class)."""
    run_class = run.get("device_class", run.get("device"))
    base = json.loads(path.read_text())
    base_class = base.get("device_class", base.get("device"))
    gated = run_class == base_class
    if not gated:
        print(f"compare: run device class {run_class} ({run.get('device_name')}) vs baseline {base_class} "
              f"({base.get('device_name')}): ratios do not transfer between classes; listed, nothing gated")
    print(f"compare: run against {path}")
    rows, notes = compare(run, base, tolerance)
    if not gated:
        rows = [{**r, "gated": False} for r in rows]
    print(format_rows(rows))
    for note in notes:
        print(f"skipped: {note}")
    counts = {s: sum(r["status"] == s and r["gated"] for r in rows) for s in ("OK", "IMPROVED", "REGRESSED")}
    print(f"compare: gated (our kernels): {counts['OK']} OK, {counts['IMPROVED']} improved, "
          f"{counts['REGRESSED']} regressed; {sum(not r['gated'] for r in rows)} listed for information; "
          f"{len(notes)} skipped")
    return [r for r in rows if r["status"] == "REGRESSED" and r["gated"]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("baseline", type=Path, help="a stored run, or a directory of them named <device_class>.json")
    p.add_argument("--tolerance", type=float, default=0.15, help="smallest relative noise band (default 0.15)")
    args = p.parse_args(argv)
    run = json.loads(args.run.read_text())
    run_class = run.get("device_class", run.get("device"))
    path = args.baseline / f"{run_class}.json" if args.baseline.is_dir() else args.baseline
    if path.exists():
        regressed = _gated_regressions(run, path, args.tolerance)
    else:
        print(f"compare: no stored baseline for device class {run_class} ({run.get('device_name')}): {path} "
              f"does not exist; ratios listed, nothing gated (store one: cp {args.run} {path})")
        print(_ratio_listing(run))
        regressed = []
    problems = _run_problems(run)
    for problem in problems:
        print(f"compare: {problem}")
    return 1 if regressed or problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare a perf run with a stored baseline run by ratios, not times.

    python perf/compare.py RUN.json BASELINE.json [--tolerance 0.15]

For every backend entry (case, mode, impl) present in both files and every baseline name in both
entries' ``ratio_vs`` (baseline p50 / impl p50, measured side by side in one run, so the machine's
speed cancels), the new ratio is compared with the stored one. The noise band is the larger of
``--tolerance`` and the runs' own spread: for each of the four p50s involved (impl and baseline,
new and stored) half its relative p20-p80 spread, summed. A ratio below ``stored / (1 + band)`` is
REGRESSED (exit 1), above ``stored x (1 + band)`` IMPROVED, otherwise OK. Entries, or ratios,
present on one side only are listed and ignored, as are entries whose shape or dtype changed.
A run that did not complete (cut short: ``complete`` false) or that recorded failing
implementations (``--keep-going``) also exits 1. Baselines are stored per device class:
perf/baselines/<device_class>.json (``cpu``, ``h100``, ...); comparing across classes is noted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
                         "band": band, "status": status})
    return rows, notes


def format_rows(rows: list[dict]) -> str:
    table = [("case", "mode", "impl", "vs", "stored", "new", "band", "status")]
    table += [(r["case"], r["mode"], r["impl"], r["vs"], f"{r['stored']:.3f}x", f"{r['new']:.3f}x",
               f"+-{r['band']:.0%}", r["status"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("baseline", type=Path)
    p.add_argument("--tolerance", type=float, default=0.15, help="smallest relative noise band (default 0.15)")
    args = p.parse_args(argv)
    run, base = json.loads(args.run.read_text()), json.loads(args.baseline.read_text())
    run_class, base_class = run.get("device_class", run.get("device")), base.get("device_class", base.get("device"))
    if run_class != base_class:
        print(f"compare: note: run device class {run_class} ({run.get('device_name')}) vs baseline "
              f"{base_class} ({base.get('device_name')}); ratios may not transfer")
    rows, notes = compare(run, base, args.tolerance)
    print(format_rows(rows))
    for note in notes:
        print(f"skipped: {note}")
    regressed = [r for r in rows if r["status"] == "REGRESSED"]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("OK", "IMPROVED", "REGRESSED")}
    print(f"compare: {counts['OK']} OK, {counts['IMPROVED']} improved, {counts['REGRESSED']} regressed, "
          f"{len(notes)} skipped")
    problems = []
    if run.get("complete") is False:
        problems.append("the run did not complete (cut short): its missing cases were not compared")
    problems += [f"failed: {f['case']} [{f['impl']}] {f['stage']}: {f['error']}" for f in run.get("failures", [])]
    for problem in problems:
        print(f"compare: {problem}")
    return 1 if regressed or problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""``lam-fast report RUN [RUN ...] [--out REPORT.md]``: one markdown report of training runs and
the evaluation JSON files found in each run's ``eval/`` folder (``lam-fast eval ... --json``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HEADLINE = {"leakage": "error_changed", "transfer": "error_transferred"}


def _run_summary(run: Path) -> dict:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"report: {run} has no metrics.jsonl (not a training run directory)")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not records:
        raise SystemExit(f"report: {metrics} is empty")
    evals = {}
    for path in sorted((run / "eval").glob("*.json")) if (run / "eval").is_dir() else []:
        result = json.loads(path.read_text())
        evals[result.get("protocol", path.stem)] = result
    first, last = records[0], records[-1]
    return {"run": str(run), "steps": last["step"], "loss": (first["loss"], last["loss"]),
            "rel_to_copy": (first.get("pred/rel_to_copy"), last.get("pred/rel_to_copy")), "evals": evals}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def render(summaries: list[dict]) -> str:
    lines = ["# lam_fast report", "", "## Training", "",
             "| run | steps | loss first -> last | prediction error / copy first -> last |", "|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| `{s['run']}` | {s['steps']} | {_fmt(s['loss'][0])} -> {_fmt(s['loss'][1])} | "
                     f"{_fmt(s['rel_to_copy'][0])} -> {_fmt(s['rel_to_copy'][1])} |")
    lines += ["", "## Evaluations (errors: mean L1 in state space)", "",
              "| run | protocol | clips | error original | error changed / transferred | ratio |", "|---|---|---|---|---|---|"]
    for s in summaries:
        for protocol, r in s["evals"].items():
            changed = r.get(HEADLINE.get(protocol, ""), None)
            lines.append(f"| `{s['run']}` | {protocol} | {r.get('clips', len(r.get('clip_sources', [])))} | "
                         f"{_fmt(r.get('error_original'))} | {_fmt(changed)} | {_fmt(r.get('ratio'))} |")
    lines += ["", "Leakage: error of the frame after an artificial scene cut over the error without the cut "
              "(about 2-2.5 in the paper; near 1 would mean z carries the next frame). Transfer: error of a "
              "clip's rollout with latents cycled through another clip over its own latents (1.03-1.34 in "
              "the paper).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lam-fast report", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default: FIRST_RUN/report.md)")
    args = parser.parse_args(argv)
    summaries = [_run_summary(run) for run in args.runs]
    out = args.out or args.runs[0] / "report.md"
    out.write_text(render(summaries))
    for s in summaries:
        for protocol, r in s["evals"].items():
            print(f"report: {s['run']} {protocol} ratio {r['ratio']:.3f} "
                  f"(error {r['error_original']:.4f} -> {r[HEADLINE[protocol]]:.4f})")
    print(f"report: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

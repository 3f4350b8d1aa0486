"""``lam-fast report RUN [RUN ...] [--out REPORT.md]``: one report of training runs and what their
``eval/`` folders hold, as markdown and as HTML next to it (``REPORT.html``, same content, images
as ``<img src="relative path">``).

Read from each ``RUN/eval/``: the protocol JSON files of ``lam-fast eval ... --json`` (leakage,
transfer, capacity), planning results ``plan*.json`` (``task``, ``policy``, ``method``,
``episodes`` and ``delta_actions`` or ``ate`` / ``rpe``), controller results ``controller*.json``
(``kind``, ``rollout_error_idm``, ``rollout_error_controller``, ``ratio``) and figures ``*.png``.
A JSON file that cannot be read or is not an object is listed as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
from pathlib import Path

from lam_fast.io import write_text_atomic

HEADLINE = {"leakage": "error_changed", "transfer": "error_transferred"}


def _load_json(path: Path) -> dict:
    result = json.loads(path.read_text())
    if not isinstance(result, dict):
        raise ValueError(f"expected a JSON object, got {type(result).__name__}")
    return result


def _run_summary(run: Path) -> dict:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"report: {run} has no metrics.jsonl (not a training run directory)")
    records = []
    for line in metrics.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: the rest is still useful
                continue
    if not records:
        raise SystemExit(f"report: {metrics} is empty")
    evals, capacity, planning, controllers, skipped = {}, [], [], [], []
    eval_dir = run / "eval"
    for path in sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []:
        try:
            result = _load_json(path)
        except (OSError, UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
            skipped.append((path.name, f"{type(error).__name__}: {error}"))
            continue
        protocol = result.get("protocol")
        if path.name.startswith("plan") or protocol in ("plan", "planning"):
            planning.append((path.name, result))
        elif path.name.startswith("controller") or protocol == "controller":
            controllers.append((path.name, result))
        elif protocol == "capacity":
            capacity.append((path.name, result))
        elif protocol in HEADLINE or "error_original" in result:
            key = protocol or path.stem
            evals[key if key not in evals else path.stem] = result
        else:
            skipped.append((path.name, "not a known result (no protocol, not plan*/controller*)"))
    figures = sorted(eval_dir.glob("*.png")) if eval_dir.is_dir() else []
    first, last = records[0], records[-1]
    return {"run": str(run), "steps": last.get("step"), "loss": (first.get("loss"), last.get("loss")),
            "rel_to_copy": (first.get("pred/rel_to_copy"), last.get("pred/rel_to_copy")), "evals": evals,
            "capacity": capacity, "planning": planning, "controllers": controllers, "figures": figures,
            "skipped": skipped}


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}"


def _num(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else _fmt(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render(summaries: list[dict], base: Path | None = None) -> str:
    """Markdown of the runs' summaries; figure links are relative to ``base`` (the report's folder)."""
    lines = ["# lam_fast report", "", "## Training", ""]
    lines += _table(["run", "steps", "loss first -> last", "prediction error / copy first -> last"],
                    [[f"`{s['run']}`", _fmt(s["steps"]), f"{_fmt(s['loss'][0])} -> {_fmt(s['loss'][1])}",
                      f"{_fmt(s['rel_to_copy'][0])} -> {_fmt(s['rel_to_copy'][1])}"] for s in summaries])
    lines += ["", "## Evaluations (errors: mean L1 in state space)", ""]
    rows = []
    for s in summaries:
        for protocol, r in s["evals"].items():
            changed = r.get(HEADLINE.get(r.get("protocol", protocol), ""), None)
            rows.append([f"`{s['run']}`", protocol, _fmt(r.get("clips", len(r.get("clip_sources", [])))),
                         _fmt(r.get("error_original")), _fmt(changed), _fmt(r.get("ratio"))])
    lines += _table(["run", "protocol", "clips", "error original", "error changed / transferred", "ratio"], rows)
    lines += ["", "Leakage: error of the frame after an artificial scene cut over the error without the cut "
              "(about 2-2.5 in the paper; near 1 would mean z carries the next frame). Transfer: error of a "
              "clip's rollout with latents cycled through another clip over its own latents (1.03-1.34 in "
              "the paper).", ""]
    capacity = [(s, name, r) for s in summaries for name, r in s["capacity"]]
    if capacity:
        lines += ["## Capacity (one-step error with the IDM's latents vs the deterministic baseline)", ""]
        for s, name, r in capacity:
            det = r.get("baseline", {}) if isinstance(r.get("baseline"), dict) else {}
            rows = [[f"`{det.get('run', '-')}`", "deterministic (baseline)", "-", "-", _fmt(det.get("error")), "1"]]
            for run in r.get("runs", []) if isinstance(r.get("runs"), list) else []:
                rows.append([f"`{run.get('run', '-')}`", _fmt(run.get("reg")), _fmt(run.get("capacity_knob")),
                             _fmt(run.get("knob_value")), _fmt(run.get("error")), _fmt(run.get("rel_to_baseline"))])
            lines += [f"`{s['run']}/eval/{name}` ({_fmt(r.get('clips'))} clips, {r.get('metric', '-')}):", ""]
            lines += _table(["run", "regulariser", "knob", "value", "error", "error / baseline"], rows) + [""]
        lines += ["Larger lambda_l1 or beta = lower capacity; larger codebook = higher capacity. The paper: sparse "
                  "and noisy latents reach much higher capacity than VQ, which stays close to the deterministic "
                  "baseline.", ""]
    planning = [(s, name, r) for s in summaries for name, r in s["planning"]]
    if planning:
        lines += ["## Planning", ""]
        rows = [[f"`{s['run']}`", name, _fmt(r.get("task")), _fmt(r.get("policy")), _fmt(r.get("method")),
                 _fmt(r.get("episodes")), _fmt(r.get("problems")), _fmt(r.get("delta_actions")),
                 _fmt(r.get("end_effector_error")), _fmt(r.get("ate")), _fmt(r.get("rpe"))]
                for s, name, r in planning]
        lines += _table(["run", "file", "task", "policy", "method", "episodes", "problems", "delta actions",
                         "end-effector error", "ATE", "RPE"], rows)
        lines += ["", "Reacher: delta actions = mean L1 between the summed planned and summed true actions; "
                  "navigation: ATE / RPE of the planned trajectory (lower is better).", ""]
    controllers = [(s, name, r) for s in summaries for name, r in s["controllers"]]
    if controllers:
        lines += ["## Controllers (rollout error with IDM latents vs controller latents)", ""]
        rows = [[f"`{s['run']}`", name, _fmt(r.get("task")), _fmt(r.get("kind")), _fmt(r.get("rollout_error_idm")),
                 _fmt(r.get("rollout_error_controller")), _fmt(r.get("ratio")), _fmt(r.get("heldout_r2"))]
                for s, name, r in controllers]
        lines += _table(["run", "file", "task", "kind", "rollout error (IDM z)", "rollout error (controller z)", "ratio",
                         "held-out latent R²"], rows)
        lines += [""]
    figures = [(s, f) for s in summaries for f in s["figures"]]
    if figures:
        lines += ["## Figures", ""]
        for s, figure in figures:
            link = Path(os.path.relpath(figure, base)).as_posix() if base is not None else figure.as_posix()
            lines += [f"`{s['run']}/eval/{figure.name}`", "", f"![{figure.stem}]({link})", ""]
    skipped = [(s, name, why) for s in summaries for name, why in s["skipped"]]
    if skipped:
        lines += ["## Skipped files", ""]
        lines += _table(["run", "file", "reason"], [[f"`{s['run']}`", f"`{name}`", why.replace("|", "/")]
                                                     for s, name, why in skipped]) + [""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escape, then turn `code` spans and ![alt](src) images into HTML."""
    out, pos = [], 0
    for m in re.finditer(r"`([^`]*)`|!\[([^\]]*)\]\(([^)]*)\)", text):
        out.append(html.escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            out.append(f'<img src="{html.escape(m.group(3), quote=True)}" alt="{html.escape(m.group(2), quote=True)}">')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def to_html(markdown: str, title: str = "lam_fast report") -> str:
    """HTML of the markdown :func:`render` writes (headings, pipe tables, paragraphs, code spans, images)."""
    body, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            i -= 1
            cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
            rows = [cells[0]] + [r for r in cells[1:] if not all(set(c) <= set("-:") for c in r)]
            table = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr>"]
            table += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:]]
            body.append("\n".join(table + ["</table>"]))
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:0.5em 0}td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lam-fast report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown file (default: FIRST_RUN/report.md); the HTML goes next to it (.html)")
    args = parser.parse_args(argv)
    summaries = [_run_summary(run) for run in args.runs]
    out = args.out or args.runs[0] / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    markdown = render(summaries, base=out.parent)
    write_text_atomic(out, markdown)
    html_out = out.with_suffix(".html")
    write_text_atomic(html_out, to_html(markdown))
    for s in summaries:
        for protocol, r in s["evals"].items():
            changed = r.get(HEADLINE.get(r.get("protocol", protocol), ""))
            print(f"report: {s['run']} {protocol} ratio {_num(r.get('ratio'), '.3f')} "
                  f"(error {_num(r.get('error_original'), '.4f')} -> {_num(changed, '.4f')})")
        for name, r in s["capacity"]:
            for run in r.get("runs", []) if isinstance(r.get("runs"), list) else []:
                print(f"report: capacity {run.get('run')} ({run.get('reg')} {run.get('capacity_knob')}="
                      f"{_fmt(run.get('knob_value'))}) error / baseline {_fmt(run.get('rel_to_baseline'))}")
        for name, why in s["skipped"]:
            print(f"report: skipped {s['run']}/eval/{name}: {why}")
    print(f"report: wrote {out}")
    print(f"report: wrote {html_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

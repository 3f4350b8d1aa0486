"""The report of training runs and what their ``eval/`` folders hold, as markdown and as HTML
(same content, images as ``<img src="relative path">``); ``lam-fast report`` (``lam_fast.cli.report``)
writes it.

Read from each ``RUN/eval/``: every ``*.json`` result file, classified by its content (its kind,
:func:`lam_fast.eval.results.read_result`), never by its name: the protocol files of
``lam-fast eval ... --json`` (leakage, transfer, capacity), planning results (``lam-fast plan``),
controller and action-model results (``lam-fast train-controller`` / ``train-action-model``),
decoder metrics (``lam-fast train-decoder --json``), and figures ``*.png``. A JSON file that
cannot be read or is not a known result (not an object, no kind, a missing or unknown key) is
listed as skipped, with the reason.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lam_fast.eval.results import (
    ABSENT,
    ActionModelResult,
    CapacityResult,
    ControllerResult,
    DecoderResult,
    LeakageResult,
    PlanResult,
    TransferResult,
    read_result,
)
from lam_fast.io import write_text_atomic


class NotARun(ValueError):
    """A report was asked of a folder that is not a training run (no or empty ``metrics.jsonl``)."""


@dataclass(frozen=True)
class RunSummary:
    """What the report shows of one run: training progress, its result files (by file name, in
    name order), figures, and the files it skipped with the reason."""

    run: str
    steps: object
    loss: tuple[object, object]
    rel_to_copy: tuple[object, object]
    results: tuple[tuple[str, object], ...]
    figures: tuple[Path, ...]
    skipped: tuple[tuple[str, str], ...]

    def of(self, *kinds: type) -> list[tuple[str, object]]:
        """``(file name, result)`` of the results of the given record types."""
        return [(name, r) for name, r in self.results if isinstance(r, kinds)]

    def evals(self) -> list[tuple[str, LeakageResult | TransferResult]]:
        """Leakage and transfer results labelled by protocol (by file stem for a second one)."""
        labelled, seen = [], set()
        for name, r in self.of(LeakageResult, TransferResult):
            label = r.protocol if r.protocol not in seen else Path(name).stem
            seen.add(label)
            labelled.append((label, r))
        return labelled


def _training_records(run: Path) -> list[dict]:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise NotARun(f"{run} has no metrics.jsonl (not a training run directory)")
    records = []
    for line in metrics.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: the rest is still useful
                continue
    if not records:
        raise NotARun(f"{metrics} is empty")
    return records


def summarize_run(run: Path) -> RunSummary:
    """Read a run's ``metrics.jsonl`` and every file of its ``eval/`` folder. :class:`NotARun`
    when ``run`` has no training metrics."""
    records = _training_records(run)
    results, skipped = [], []
    eval_dir = run / "eval"
    for path in sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []:
        try:
            results.append((path.name, read_result(path)))
        except (OSError, UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
            skipped.append((path.name, f"{type(error).__name__}: {error}"))
    figures = sorted(eval_dir.glob("*.png")) if eval_dir.is_dir() else []
    first, last = records[0], records[-1]
    return RunSummary(run=str(run), steps=last.get("step"), loss=(first.get("loss"), last.get("loss")),
                      rel_to_copy=(first.get("pred/rel_to_copy"), last.get("pred/rel_to_copy")),
                      results=tuple(results), figures=tuple(figures), skipped=tuple(skipped))


def format_value(value) -> str:
    """A table cell: ``-`` for null or absent, 4 significant digits for a number, else ``str``."""
    if value is None or value is ABSENT:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}"


def format_number(value, spec: str) -> str:
    """``value`` formatted with ``spec`` when it is a number, else as :func:`format_value`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return format_value(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown pipe table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


_fmt = format_value


def _training_section(summaries: list[RunSummary]) -> list[str]:
    lines = ["## Training", ""]
    return lines + markdown_table(
        ["run", "steps", "loss first -> last", "prediction error / copy first -> last"],
        [[f"`{s.run}`", _fmt(s.steps), f"{_fmt(s.loss[0])} -> {_fmt(s.loss[1])}",
          f"{_fmt(s.rel_to_copy[0])} -> {_fmt(s.rel_to_copy[1])}"] for s in summaries])


def _evaluations_section(summaries: list[RunSummary]) -> list[str]:
    lines = ["", "## Evaluations (errors: mean L1 in state space)", ""]
    rows = [[f"`{s.run}`", label, _fmt(r.clips), _fmt(r.error_original), _fmt(r.error_changed_or_transferred),
             _fmt(r.ratio)] for s in summaries for label, r in s.evals()]
    lines += markdown_table(["run", "protocol", "clips", "error original", "error changed / transferred", "ratio"],
                            rows)
    return lines + ["", "Leakage: error of the frame after an artificial scene cut over the error without the cut "
                    "(about 2-2.5 in the paper; near 1 would mean z carries the next frame). Transfer: error of a "
                    "clip's rollout with latents cycled through another clip over its own latents (1.03-1.34 in "
                    "the paper).", ""]


def _capacity_section(summaries: list[RunSummary]) -> list[str]:
    capacity = [(s, name, r) for s in summaries for name, r in s.of(CapacityResult)]
    if not capacity:
        return []
    lines = ["## Capacity (one-step error with the IDM's latents vs the deterministic baseline)", ""]
    for s, name, r in capacity:
        det = r.baseline
        rows = [[f"`{det.run}`", "deterministic (baseline)", "-", "-", _fmt(det.error), "1"]]
        rows += [[f"`{run.run}`", _fmt(run.reg), _fmt(run.capacity_knob), _fmt(run.knob_value), _fmt(run.error),
                  _fmt(run.rel_to_baseline)] for run in r.runs]
        lines += [f"`{s.run}/eval/{name}` ({_fmt(r.clips)} clips, {r.metric}):", ""]
        lines += markdown_table(["run", "regulariser", "knob", "value", "error", "error / baseline"], rows) + [""]
    return lines + ["Larger lambda_l1 or beta = lower capacity; larger codebook = higher capacity. The paper: sparse "
                    "and noisy latents reach much higher capacity than VQ, which stays close to the deterministic "
                    "baseline.", ""]


def _planning_section(summaries: list[RunSummary]) -> list[str]:
    planning = [(s, name, r) for s in summaries for name, r in s.of(PlanResult)]
    if not planning:
        return []
    rows = [[f"`{s.run}`", name, _fmt(r.task), _fmt(r.policy), _fmt(r.method), _fmt(r.episodes), _fmt(r.problems),
             _fmt(r.delta_actions), _fmt(r.end_effector_error), _fmt(r.ate), _fmt(r.rpe)] for s, name, r in planning]
    lines = ["## Planning", ""]
    lines += markdown_table(["run", "file", "task", "policy", "method", "episodes", "problems", "delta actions",
                             "end-effector error", "ATE", "RPE"], rows)
    return lines + ["", "Reacher: delta actions = mean L1 between the summed planned and summed true actions; "
                    "navigation: ATE / RPE of the planned trajectory (lower is better).", ""]


def _controllers_section(summaries: list[RunSummary]) -> list[str]:
    controllers = [(s, name, r) for s in summaries for name, r in s.of(ControllerResult)]
    if not controllers:
        return []
    rows = [[f"`{s.run}`", name, _fmt(r.task), _fmt(r.kind), _fmt(r.rollout_error_idm),
             _fmt(r.rollout_error_controller), _fmt(r.ratio), _fmt(r.heldout_r2)] for s, name, r in controllers]
    lines = ["## Controllers (rollout error with IDM latents vs controller latents)", ""]
    return lines + markdown_table(["run", "file", "task", "kind", "rollout error (IDM z)",
                                   "rollout error (controller z)", "ratio", "held-out latent R²"], rows) + [""]


def _action_models_section(summaries: list[RunSummary]) -> list[str]:
    models = [(s, name, r) for s in summaries for name, r in s.of(ActionModelResult)]
    if not models:
        return []
    rows = [[f"`{s.run}`", name, _fmt(r.task), _fmt(r.steps), _fmt(r.one_step_error), _fmt(r.one_step_error_copy),
             _fmt(r.rel_to_copy), f"{_fmt(r.episodes_train)} / {_fmt(r.episodes_heldout)}"]
            for s, name, r in models]
    lines = ["## Action-conditioned models (held-out one-step error vs copying the last state)", ""]
    return lines + markdown_table(["run", "file", "task", "steps", "one-step error", "copy error", "error / copy",
                                   "episodes train / held out"], rows) + [""]


def _decoders_section(summaries: list[RunSummary]) -> list[str]:
    decoders = [(s, name, r) for s in summaries for name, r in s.of(DecoderResult)]
    if not decoders:
        return []
    rows = [[f"`{s.run}`", name, _fmt(r.encoder), _fmt(r.l1), _fmt(r.psnr), _fmt(r.ssim), _fmt(r.lpips),
             _fmt(r.inverse_psnr), f"{_fmt(r.clips_train)} / {_fmt(r.clips_heldout)}"] for s, name, r in decoders]
    lines = ["## Decoders (held-out reconstruction of frames from states)", ""]
    return lines + markdown_table(["run", "file", "encoder", "L1", "PSNR (dB)", "SSIM", "LPIPS",
                                   "exact-inverse PSNR (dB)", "clips train / held out"], rows) + [""]


def _figures_section(summaries: list[RunSummary], base: Path | None) -> list[str]:
    figures = [(s, f) for s in summaries for f in s.figures]
    if not figures:
        return []
    lines = ["## Figures", ""]
    for s, figure in figures:
        link = Path(os.path.relpath(figure, base)).as_posix() if base is not None else figure.as_posix()
        lines += [f"`{s.run}/eval/{figure.name}`", "", f"![{figure.stem}]({link})", ""]
    return lines


def _skipped_section(summaries: list[RunSummary]) -> list[str]:
    skipped = [(s, name, why) for s in summaries for name, why in s.skipped]
    if not skipped:
        return []
    rows = [[f"`{s.run}`", f"`{name}`", why.replace("|", "/")] for s, name, why in skipped]
    return ["## Skipped files", ""] + markdown_table(["run", "file", "reason"], rows) + [""]


def render(summaries: list[RunSummary], base: Path | None = None) -> str:
    """Markdown of the runs' summaries; figure links are relative to ``base`` (the report's folder)."""
    lines = ["# lam_fast report", ""]
    lines += _training_section(summaries) + _evaluations_section(summaries) + _capacity_section(summaries)
    lines += _planning_section(summaries) + _controllers_section(summaries) + _action_models_section(summaries)
    lines += _decoders_section(summaries) + _figures_section(summaries, base) + _skipped_section(summaries)
    return "\n".join(lines)


def console_lines(summaries: list[RunSummary]) -> list[str]:
    """One line per headline number and per skipped file, for the terminal."""
    lines = []
    for s in summaries:
        for label, r in s.evals():
            lines.append(f"report: {s.run} {label} ratio {format_number(r.ratio, '.3f')} (error "
                         f"{format_number(r.error_original, '.4f')} -> "
                         f"{format_number(r.error_changed_or_transferred, '.4f')})")
        for _, r in s.of(CapacityResult):
            lines += [f"report: capacity {run.run} ({run.reg} {run.capacity_knob}={_fmt(run.knob_value)}) "
                      f"error / baseline {_fmt(run.rel_to_baseline)}" for run in r.runs]
        lines += [f"report: skipped {s.run}/eval/{name}: {why}" for name, why in s.skipped]
    return lines


def write_report(summaries: list[RunSummary], out: Path) -> tuple[Path, Path]:
    """Write the markdown to ``out`` and the HTML next to it (``.html``), atomically; both paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    markdown = render(summaries, base=out.parent)
    write_text_atomic(out, markdown)
    html_out = out.with_suffix(".html")
    write_text_atomic(html_out, to_html(markdown))
    return out, html_out


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

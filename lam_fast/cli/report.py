"""``lam-fast report RUN [RUN ...] [--out REPORT.md]``: one report of training runs and what their
``eval/`` folders hold, as markdown and as HTML next to it (``REPORT.html``, same content, images
as ``<img src="relative path">``).

Every ``RUN/eval/*.json`` result file is classified by its content (see
:mod:`lam_fast.eval.report`): leakage, transfer, capacity, planning, controller, action-model and
decoder results get a table each; the ``*.png`` figures are linked. A JSON file that cannot be read
or is not a known result is listed as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lam_fast.cli.errors import run_command
from lam_fast.errors import UserError


def main(argv: list[str] | None = None) -> int:
    from lam_fast.eval.report import NotARun, console_lines, summarize_run, write_report

    parser = argparse.ArgumentParser(prog="lam-fast report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown file (default: FIRST_RUN/report.md); the HTML goes next to it (.html)")
    args = parser.parse_args(argv)
    try:
        summaries = [summarize_run(run) for run in args.runs]
    except NotARun as error:
        raise UserError(str(error)) from None
    markdown, page = write_report(summaries, args.out or args.runs[0] / "report.md")
    for line in console_lines(summaries):
        print(line)
    print(f"report: wrote {markdown}")
    print(f"report: wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("lam-fast report", main))

"""``lam-fast report RUN [RUN ...]``: one markdown + HTML report."""

from lam_fast.eval.report import main  # noqa: F401  (moves here from eval.report)

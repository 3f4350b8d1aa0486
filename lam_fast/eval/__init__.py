"""The paper's evaluation protocols (PAPER.md section 5) on encoder states."""

from lam_fast.eval.protocols import leakage, transfer

__all__ = ["leakage", "transfer"]

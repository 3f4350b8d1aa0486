"""The paper's evaluation protocols (PAPER.md sections 2 and 5) on encoder states."""

from lam_fast.eval.protocols import capacity, leakage, transfer

__all__ = ["capacity", "leakage", "transfer"]

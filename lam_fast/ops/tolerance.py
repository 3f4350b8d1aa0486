"""The one tolerance rule for judging a backend of an op against the reference (DESIGN.md, Tests).

Shared by the tests (tests/tolerance.py) and the perf harness's correctness check (perf/harness.py),
so a kernel that passes one passes the other.

A backend computes the op in some dtype; so does the reference. Both are compared with an fp64
oracle (the reference run on the same inputs converted to float64). The backend may be at most
about twice as far from the oracle as the reference is, plus a rounding band of a few units in the
last place of the dtype at the output's magnitude, which covers outputs the reference happens to get
(almost) exactly right. Errors are max-abs over the whole tensor.

An output that cancels to (nearly) zero from larger terms (say the gradient of a softmax over a
single key) carries rounding noise at the size of those terms, not of the result: pass that size as
`scale` (e.g. the largest input). It only sets the magnitude of the rounding band.
"""

from __future__ import annotations

import torch

REFERENCE_FACTOR = 2.0
ROUNDING_ULPS = 4.0


def allowed_error(reference_error: float, magnitude: float, dtype: torch.dtype) -> float:
    """The largest max-abs error against the fp64 oracle a backend computing in ``dtype`` may have:
    ``REFERENCE_FACTOR x reference_error + ROUNDING_ULPS x eps(dtype) x magnitude``."""
    return REFERENCE_FACTOR * reference_error + ROUNDING_ULPS * torch.finfo(dtype).eps * magnitude


def max_abs_error(actual: torch.Tensor, oracle: torch.Tensor) -> float:
    """max |actual - oracle| in float64 (NaN if either holds a NaN where the other does not match it)."""
    return (actual.detach().to(torch.float64) - oracle.detach().to(torch.float64)).abs().max().item()


def assert_close_to_oracle(
    actual: torch.Tensor,
    reference_same_dtype: torch.Tensor,
    oracle_fp64: torch.Tensor,
    *,
    name: str,
    scale: float | None = None,
) -> None:
    """Raise AssertionError unless |actual - oracle| <= 2 |reference - oracle| + 4 ulp * magnitude,
    with magnitude = max(max|oracle|, scale)."""
    if actual.shape != oracle_fp64.shape or reference_same_dtype.shape != oracle_fp64.shape:
        raise AssertionError(
            f"{name}: shapes differ: actual {tuple(actual.shape)}, reference {tuple(reference_same_dtype.shape)}, "
            f"oracle {tuple(oracle_fp64.shape)}"
        )
    if actual.dtype != reference_same_dtype.dtype:
        raise AssertionError(f"{name}: dtype {actual.dtype} differs from the reference's {reference_same_dtype.dtype}")
    if actual.numel() == 0:
        return
    oracle = oracle_fp64.detach().to(torch.float64)
    err = max_abs_error(actual, oracle)
    ref_err = max_abs_error(reference_same_dtype, oracle)
    magnitude = max(oracle.abs().max().item(), 0.0 if scale is None else float(scale))
    band = allowed_error(0.0, magnitude, actual.dtype)
    allowed = allowed_error(ref_err, magnitude, actual.dtype)
    if not err <= allowed:  # also catches NaN
        raise AssertionError(
            f"{name} ({actual.dtype}): max |actual - oracle| = {err:.3e} > {REFERENCE_FACTOR} x reference error "
            f"{ref_err:.3e} + rounding band {band:.3e} (magnitude {magnitude:.3e}; pass scale= if this output "
            "cancels from larger terms)"
        )

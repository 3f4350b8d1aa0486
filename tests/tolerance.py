"""The tests' tolerance rule: the one of lam_fast.ops.tolerance, shared with perf/harness.py."""

from lam_fast.ops.tolerance import (REFERENCE_FACTOR, ROUNDING_ULPS, allowed_error,  # noqa: F401
                                    assert_close_to_oracle, max_abs_error)

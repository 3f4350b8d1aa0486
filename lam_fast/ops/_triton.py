"""Where the Triton backends may run, and the check their loaders share.

Triton compiles for a CUDA GPU. With ``TRITON_INTERPRET=1`` (read by triton when a kernel is
decorated, so it must be set before the first Triton backend loads) the same kernels run on CPU
tensors through Triton's interpreter: slow, but exact enough for the property tests in CI.
"""

from __future__ import annotations

import os


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


#: Device types a Triton backend is registered for.
TRITON_DEVICES: tuple[str, ...] = ("cuda", "cpu") if interpreting() else ("cuda",)


def require_triton() -> None:
    """Import triton. Not installed: a ModuleNotFoundError naming it (the backend is absent, the
    dispatcher skips it quietly); installed but failing to import: that error unchanged (broken)."""
    try:
        import triton  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "triton":
            raise
        raise ModuleNotFoundError("triton is not installed; `pip install triton` (the [gpu] extra)",
                                  name="triton") from exc

"""Shared by the C++ backend tests."""

import contextlib


@contextlib.contextmanager
def simd(extension, capability: str):
    """Run the ops with one of the extension's SIMD kernel sets (avx512 / avx2 / base)."""
    previous = extension.cpu_capability()
    extension.set_cpu_capability(capability)
    try:
        yield
    finally:
        extension.set_cpu_capability(previous)

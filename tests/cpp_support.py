"""Shared by the C++ backend tests."""

import contextlib


@contextlib.contextmanager
def _switched(get, set_, value):
    previous = get()
    set_(value)
    try:
        yield
    finally:
        set_(previous)


def simd(extension, capability: str):
    """Run the ops with one of the extension's SIMD kernel sets (avx512 / avx2 / base)."""
    return _switched(extension.cpu_capability, extension.set_cpu_capability, capability)


def attention_gemm(extension, name: str):
    """Run the CPU attention with the named tile GEMM (blas / portable)."""
    return _switched(extension.attention_gemm, extension.set_attention_gemm, name)

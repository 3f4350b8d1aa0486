"""The old path of the DALI decoder backend, now :mod:`lam_fast.data.decoders.dali` (tests and
scripts written before the decoders became a package import it from here)."""

from lam_fast.data.decoders.dali import CPU_CODECS, GPU_CODECS, DaliDecoder

__all__ = ["CPU_CODECS", "GPU_CODECS", "DaliDecoder"]

"""Clip decoders: one interface (:mod:`.base`), one module per backend, chosen by :mod:`.registry`.

See :mod:`lam_fast.data.decoders.registry` for the backends and what ``auto`` picks.
"""

from lam_fast.data.decoders.base import ClipDecoder, ClipRequest, DecoderUnavailable
from lam_fast.data.decoders.dali import DaliDecoder
from lam_fast.data.decoders.opencv import OpenCVDecoder
from lam_fast.data.decoders.pyav import PyAVDecoder
from lam_fast.data.decoders.registry import DECODERS, auto_decoder, decoder_status, make_decoder

__all__ = [
    "DECODERS",
    "ClipDecoder",
    "ClipRequest",
    "DaliDecoder",
    "DecoderUnavailable",
    "OpenCVDecoder",
    "PyAVDecoder",
    "auto_decoder",
    "decoder_status",
    "make_decoder",
]

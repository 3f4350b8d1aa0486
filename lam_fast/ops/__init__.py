"""The engine's ops: one public function each, dispatched to a backend (see ``_dispatch``)."""

from lam_fast.ops._dispatch import BackendUnavailable, auto_backend, backend_status
from lam_fast.ops.adaln import adaln_modulate, gated_residual
from lam_fast.ops.attention import KVCache, Rope3D, frame_causal_attention
from lam_fast.ops.vq import VQOutput, vq_lookup

__all__ = [
    "BackendUnavailable",
    "KVCache",
    "Rope3D",
    "VQOutput",
    "adaln_modulate",
    "auto_backend",
    "backend_status",
    "frame_causal_attention",
    "gated_residual",
    "vq_lookup",
]

from lam_fast.ops.attention.api import frame_causal_attention
from lam_fast.ops.attention.cache import KVCache
from lam_fast.ops.attention.rope import Rope3D

__all__ = ["KVCache", "Rope3D", "frame_causal_attention"]

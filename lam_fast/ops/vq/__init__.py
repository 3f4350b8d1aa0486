from lam_fast.ops.vq.api import VQOutput, vq_lookup

__all__ = ["VQOutput", "vq_lookup"]

from lam_fast.ops.adaln.api import adaln_modulate, gated_residual

__all__ = ["adaln_modulate", "gated_residual"]

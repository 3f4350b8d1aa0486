"""Batched sampling-based planners (CEM, MPPI) over any differentiable-or-not rollout cost."""

from lam_fast.planning.optimizers import CEMConfig, MPPIConfig, PlanResult, cem, mppi

__all__ = ["CEMConfig", "MPPIConfig", "PlanResult", "cem", "mppi"]

"""Evaluation protocols of PAPER.md sections 2 and 5, on states: future leakage, transfer
(cycle consistency) and capacity.

Errors are mean L1 distances in the encoder's state space (the paper reports LPIPS of decoded
frames; a pixel decoder is a separate step). :func:`leakage` and :func:`transfer` take a batch of
clips' states (B >= 2, T, N, C) and pair clip i with clip (i + 1) mod B; :func:`capacity` compares
latent models with the deterministic baseline on the same clips.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from lam_fast.models.world_model import LatentActionWorldModel


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean |a - b| per clip: (B, ...) -> (B,)."""
    return (a.float() - b.float()).abs().flatten(1).mean(dim=1)


def _check(model: LatentActionWorldModel, states: torch.Tensor, min_frames: int) -> None:
    if model.regularizer is None:
        raise ValueError("the deterministic baseline has no latent actions to evaluate")
    if states.dim() != 4 or states.shape[0] < 2 or states.shape[1] < min_frames:
        raise ValueError(f"states must be (B >= 2, T >= {min_frames}, N, C), got {tuple(states.shape)}")


@torch.no_grad()
def leakage(model: LatentActionWorldModel, states: torch.Tensor, *, cut: int | None = None) -> dict:
    """Artificial scene cuts: clip i keeps frames [0, cut) and takes frames [cut, T) from clip i+1.

    The error is the one-step prediction of the frame right after the cut (teacher forcing, latents
    inferred by the IDM on the clip itself), with and without the cut. If z carried the next frame
    instead of an action, the cut would cost nothing: ``ratio`` = error_changed / error_original
    near 1 means leakage; the paper measures about 2-2.5.
    """
    _check(model, states, 2)
    t = states.shape[1]
    cut = t // 2 if cut is None else cut
    if not 1 <= cut < t:
        raise ValueError(f"cut must be in [1, T={t}), got {cut}")
    changed = torch.cat([states[:, :cut], states.roll(-1, dims=0)[:, cut:]], dim=1)

    def error_at_cut(clips):
        z = model.infer_actions(clips)
        pred = model.predict(clips[:, :-1], z)  # output t predicts s_{t+1}
        return _l1(pred[:, cut - 1], clips[:, cut])

    original, after_cut = error_at_cut(states), error_at_cut(changed)
    return {
        "error_original": original.mean().item(),
        "error_changed": after_cut.mean().item(),
        "ratio": (after_cut.mean() / original.mean()).item(),
        "per_clip": {"error_original": original.tolist(), "error_changed": after_cut.tolist()},
        "cut": cut,
        "clips": states.shape[0],
        "metric": "mean L1 in state space",
    }


@torch.no_grad()
def transfer(model: LatentActionWorldModel, states: torch.Tensor, *, targets: torch.Tensor | None = None) -> dict:
    """Cycle consistency: infer z on clip A, apply it to clip B from B's first frame, re-infer z' on
    that imagined B, apply z' back to A from A's first frame. Errors of A's rollout (against A's
    real frames) with the original z and with the cycled z'; ``ratio`` = transferred / original
    (the paper: 1.03-1.34).

    targets: (B,) index of the clip each clip's latents are applied to (default i + 1 mod B).
    Returns also ``imagined_target``: B's rollout under A's latents (for the transfer figure).
    """
    _check(model, states, 2)
    b = states.shape[0]
    targets = torch.arange(1, b + 1) % b if targets is None else targets
    z = model.infer_actions(states)  # (B, T-1, Z)
    first = states[:, :1]
    original = model.rollout(first, z)  # A with its own latents: (B, T-1, N, C)
    imagined = model.rollout(first[targets], z)  # B driven by A's latents
    z_cycled = model.infer_actions(torch.cat([first[targets], imagined], dim=1))
    cycled = model.rollout(first, z_cycled)  # back on A
    err_original, err_transferred = _l1(original, states[:, 1:]), _l1(cycled, states[:, 1:])
    return {
        "error_original": err_original.mean().item(),
        "error_transferred": err_transferred.mean().item(),
        "ratio": (err_transferred.mean() / err_original.mean()).item(),
        "per_clip": {"error_original": err_original.tolist(), "error_transferred": err_transferred.tolist()},
        "targets": targets.tolist(),
        "rollout_steps": states.shape[1] - 1,
        "metric": "mean L1 in state space",
        "imagined_target": imagined,
    }


#: The capacity knob of each regulariser (PAPER.md section 2): (TrainConfig / ModelConfig field,
#: whether a larger value means *more* capacity). ``none`` (unconstrained z) has no knob.
CAPACITY_KNOBS: dict[str, tuple[str, bool]] = {
    "sparse": ("lambda_l1", False),
    "noisy": ("beta", False),
    "discrete": ("codebook_size", True),
}


def capacity_knob(model_cfg) -> tuple[str | None, float | int | None]:
    """``(knob name, value)`` of a :class:`~lam_fast.models.config.ModelConfig` (``(None, None)``
    for the ``none`` and ``deterministic`` regularisers)."""
    if model_cfg.reg not in CAPACITY_KNOBS:
        return None, None
    name = CAPACITY_KNOBS[model_cfg.reg][0]
    sub = {"sparse": model_cfg.sparse, "noisy": model_cfg.noisy, "discrete": model_cfg.discrete}[model_cfg.reg]
    return name, getattr(sub, name)


def _one_step_error(model: LatentActionWorldModel, states: torch.Tensor) -> torch.Tensor:
    """Per-clip (B,) teacher-forced one-step error: every s_{t+1} predicted from s_{0..t} and, for
    a latent model, the IDM's z_{0..t} inferred on the clip itself."""
    z = model.infer_actions(states) if model.has_latent else None
    pred = model.predict(states[:, :-1], z)  # output t predicts s_{t+1}
    return _l1(pred, states[:, 1:])


@torch.no_grad()
def capacity(models: Iterable[LatentActionWorldModel], baseline_model: LatentActionWorldModel,
             states: torch.Tensor) -> dict:
    """Capacity = how much information z carries (PAPER.md section 2), measured as the one-step
    teacher-forced prediction error with the IDM's latents on the same clips (lower error = higher
    capacity), next to the deterministic baseline's error (no z at all).

    models: latent models (any regulariser but ``deterministic``); an iterable is consumed one
    model at a time, so a generator can load them lazily. baseline_model: a deterministic model.
    states: (B >= 1, T >= 2, N, C). Returns ``{"baseline": {"error", "per_clip"}, "runs": [{"reg",
    "capacity_knob", "knob_value", "error", "rel_to_baseline", "per_clip"}, ...], "clips",
    "metric"}`` with ``rel_to_baseline`` = error / baseline error (below 1: z helps).
    """
    if states.dim() != 4 or states.shape[0] < 1 or states.shape[1] < 2:
        raise ValueError(f"states must be (B >= 1, T >= 2, N, C), got {tuple(states.shape)}")
    if baseline_model.has_latent:
        raise ValueError(f"the baseline must be a deterministic model (no latent), got reg={baseline_model.cfg.reg!r}")
    base = _one_step_error(baseline_model, states)
    base_mean = base.mean()
    runs = []
    for i, model in enumerate(models):
        if not model.has_latent:
            raise ValueError(f"model {i} is deterministic: capacity compares latent models with the baseline")
        err = _one_step_error(model, states)
        knob, value = capacity_knob(model.cfg)
        runs.append({"reg": model.cfg.reg, "capacity_knob": knob, "knob_value": value, "error": err.mean().item(),
                     "rel_to_baseline": (err.mean() / base_mean.clamp_min(1e-12)).item(),
                     "per_clip": err.tolist()})
    return {
        "baseline": {"reg": baseline_model.cfg.reg, "error": base_mean.item(), "per_clip": base.tolist()},
        "runs": runs,
        "clips": states.shape[0],
        "metric": "mean L1 in state space, one-step teacher-forced prediction",
    }

"""Result files exactly as today's writers write them (the keys of ``lam-fast eval``,
``train-controller``, ``train-action-model``, ``plan`` and ``train-decoder --json`` before
``lam_fast.eval.results``), so the readers are tested on the files that exist on disk."""

from __future__ import annotations

import copy

import pytest

_CLIPS = ["data/a.mp4", "data/b.mp4"]

OLD_FILES = {
    # lam-fast eval leakage, before figures existed (no "figure" key)
    "leakage.json": {
        "error_original": 0.2, "error_changed": 0.5, "ratio": 2.5,
        "per_clip": {"error_original": [0.1, 0.3], "error_changed": [0.4, 0.6]}, "cut": 2, "clips": 2,
        "metric": "mean L1 in state space", "protocol": "leakage", "ckpt": "runs/sp", "data": "data",
        "clip_sources": _CLIPS, "reg": "sparse", "encoder": "pixels"},
    # lam-fast eval transfer whose figure could not be drawn (no "clips" key: counted from clip_sources)
    "transfer.json": {
        "error_original": 0.3, "error_transferred": 0.36, "ratio": 1.2,
        "per_clip": {"error_original": [0.3, 0.3], "error_transferred": [0.35, 0.37]}, "targets": [1, 0],
        "rollout_steps": 3, "metric": "mean L1 in state space", "protocol": "transfer", "ckpt": "runs/sp",
        "data": "data", "clip_sources": _CLIPS, "reg": "sparse", "encoder": "pixels", "figure": None,
        "figure_reason": "cannot decode states to pixels: no decoder"},
    "capacity.json": {
        "baseline": {"run": "runs/det", "reg": "deterministic", "error": 0.3, "per_clip": [0.3, 0.3]},
        "runs": [{"run": "runs/sp", "reg": "sparse", "capacity_knob": "lambda_l1", "knob_value": 0.02,
                  "error": 0.21, "rel_to_baseline": 0.7, "per_clip": [0.2, 0.22]},
                 {"run": "runs/none", "reg": "none", "capacity_knob": None, "knob_value": None,
                  "error": 0.1, "rel_to_baseline": 0.333, "per_clip": [0.1, 0.1]}],
        "clips": 2, "metric": "mean L1 in state space, one-step teacher-forced prediction",
        "protocol": "capacity", "data": "data", "clip_sources": _CLIPS, "encoder": "pixels", "image_size": 32,
        "num_frames": 4, "fps": 4.0, "figure": "runs/det/eval/capacity.png"},
    "controller.json": {
        "rollout_error_idm": 0.1, "rollout_error_controller": 0.12, "ratio": 1.2, "rollout_error_copy": 0.2,
        "rollout_steps": 4, "windows": 12, "kind": "cross", "task": "reacher", "ckpt": "runs/reacher",
        "data": "data/sim/reacher", "reg": "sparse", "controller": "runs/reacher/controller", "steps": 30,
        "loss_first": 1.0, "loss_final": 0.5, "heldout_latent_l2": 0.4, "heldout_latent_variance": 1.0,
        "heldout_r2": 0.6, "episodes_train": 6, "episodes_heldout": 2, "transitions_train": 90,
        "seconds": 3.5, "protocol": "controller"},
    "action_model.json": {
        "one_step_error": 0.05, "one_step_error_copy": 0.1, "rel_to_copy": 0.5, "protocol": "action_model",
        "task": "reacher", "data": "data/sim/reacher", "steps": 40, "loss_first": 0.9, "loss_final": 0.3,
        "episodes_train": 6, "episodes_heldout": 2, "seconds": 2.0},
    "plan_latent.json": {
        "task": "reacher", "policy": "latent", "method": "cem", "episodes": 2, "problems": 2, "samples": 300,
        "elites": 10, "iterations": 15, "horizon": 3, "hold": 1, "seed": 0, "delta_actions": 0.42,
        "end_effector_error": 0.05, "per_problem": {"delta_actions": [0.4, 0.44], "end_effector_error": [0.04, 0.06]},
        "units": {"delta_actions": "rad (joint-angle deltas)", "end_effector_error": "m"}, "final_cost": 1.5,
        "planned_actions": [[[0.1, 0.2]], [[0.0, -0.1]]], "protocol": "plan", "data": "data/sim/reacher",
        "ckpt": "runs/reacher", "controller": "runs/reacher/controller", "seconds": 9.0},
    # the random policy: no final_cost, no ckpt or controller (null)
    "plan_random.json": {
        "task": "nav", "policy": "random", "method": "uniform", "episodes": 2, "problems": 2, "samples": 120,
        "elites": 10, "iterations": 1, "horizon": 1, "hold": 8, "seed": 0, "ate": 2.5, "rpe": 0.7,
        "per_problem": {"ate": [2.0, 3.0], "rpe": [0.6, 0.8]}, "units": {"ate": "m", "rpe": "m"},
        "planned_actions": [[[0.1, 0.2]], [[0.0, -0.1]]], "protocol": "plan", "data": "data/sim/nav",
        "ckpt": None, "controller": None, "seconds": 0.5},
    # lam-fast train-decoder --json: no "protocol"; LPIPS unavailable; pixels encoder (exact inverse: null)
    "decoder.json": {
        "l1": 0.08, "psnr": 19.5, "ssim": 0.61, "lpips": None, "steps": 5, "clips_train": 3, "clips_heldout": 1,
        "train_l1_first": 0.3, "train_l1_last": 0.1, "lpips_reason": "lpips weights unavailable offline",
        "inverse_psnr": None, "encoder": "pixels", "image_size": 32, "num_frames": 4, "fps": 4.0,
        "ckpt": "runs/sp", "data": "data", "seed": 0},
}

#: the record type each file reads as
KINDS = {"leakage.json": "leakage", "transfer.json": "transfer", "capacity.json": "capacity",
         "controller.json": "controller", "action_model.json": "action_model", "plan_latent.json": "plan",
         "plan_random.json": "plan", "decoder.json": "decoder"}


@pytest.fixture
def old_files():
    """A fresh deep copy of :data:`OLD_FILES` (file name -> JSON object)."""
    return copy.deepcopy(OLD_FILES)


@pytest.fixture
def old_kinds():
    """File name in :data:`OLD_FILES` -> the kind it must read as."""
    return dict(KINDS)

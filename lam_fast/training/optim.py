"""Optimiser split (Muon for 2-D hidden weights, AdamW for the rest) and the LR schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from lam_fast.nn import MUON, optimizer_groups


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon, AdamW) trainable parameters, in ``named_parameters`` order, as the model's modules
    declared them (``lam_fast.nn.optim_groups``: hidden matrices to Muon; input embeddings, output
    heads, the codebook, biases and norms to AdamW). The DeepSpeed engine tags the same split."""
    groups = optimizer_groups(model)
    muon, adamw = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (muon if groups[name] == MUON else adamw).append(p)
    return muon, adamw


def warmup_cosine(total_steps: int, warmup_frac: float):
    """LR multiplier: linear warm-up over the first ``warmup_frac`` of the steps, then cosine to 0."""
    warmup = max(1, int(round(total_steps * warmup_frac)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class MuonAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the 2-D hidden weights plus torch.optim.AdamW on everything else,
    behind one optimizer interface (one param group per half, so one LambdaLR drives both)."""

    def __init__(self, model: nn.Module, *, muon_lr: float, adamw_lr: float, weight_decay: float):
        muon_params, adamw_params = split_params(model)
        self.muon = torch.optim.Muon(muon_params, lr=muon_lr, weight_decay=weight_decay) if muon_params else None
        self.adamw = torch.optim.AdamW(adamw_params, lr=adamw_lr, weight_decay=weight_decay, betas=(0.9, 0.95))
        self.parts = [opt for opt in (self.muon, self.adamw) if opt is not None]
        groups = [g for opt in self.parts for g in opt.param_groups]
        super().__init__([{"params": []}], {})
        self.param_groups = groups
        self.state = {}

    @torch.no_grad()
    def step(self, closure=None):
        for opt in self.parts:
            opt.step()

    def zero_grad(self, set_to_none: bool = True):
        for opt in self.parts:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"muon": None if self.muon is None else self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict):
        if self.muon is not None:
            self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # Optimizer.load_state_dict replaces the group dicts: point at the new ones, or the LR
        # scheduler would keep updating groups the inner optimizers no longer read
        self.param_groups = [g for opt in self.parts for g in opt.param_groups]

"""Thin modules over the ops: they own parameters and call the public ops only."""

from lam_fast.nn.attention import FrameCausalSelfAttention
from lam_fast.nn.adaln import AdaLNZeroBlock, FinalLayer
from lam_fast.nn.optim_groups import ADAMW, MUON, declare, optimizer_groups
from lam_fast.nn.vq import VectorQuantizer

__all__ = [
    "ADAMW",
    "MUON",
    "AdaLNZeroBlock",
    "FinalLayer",
    "FrameCausalSelfAttention",
    "VectorQuantizer",
    "declare",
    "optimizer_groups",
]

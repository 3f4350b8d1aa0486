from __future__ import annotations

import torch
from torch import nn

from lam_fast.nn.optim_groups import ADAMW, declare
from lam_fast.ops import VQOutput, vq_lookup


class VectorQuantizer(nn.Module):
    """A learnable codebook (K, D) queried with :func:`lam_fast.ops.vq_lookup`.

    Initialised uniformly in [-1/K, 1/K] as in VQ-VAE. ``usage`` counts how often each code was
    picked since the last dead-code reset (a buffer, so it is checkpointed with the weights).
    """

    def __init__(self, num_codes: int, dim: int, *, backend: str = "auto"):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"VectorQuantizer needs num_codes >= 1 and dim >= 1, got {num_codes}, {dim}")
        self.backend = backend
        # named like nn.Embedding's weight (checkpoints keep the name); a codebook: AdamW, not Muon
        self.embedding = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))
        declare(self, ADAMW, "embedding")
        self.register_buffer("usage", torch.zeros(num_codes, dtype=torch.int64))

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    @property
    def num_codes(self) -> int:
        return self.codebook.shape[0]

    def forward(self, x: torch.Tensor) -> VQOutput:
        """x: (M, D) -> VQOutput; counts usage while training."""
        out = vq_lookup(x, self.codebook.to(x.dtype), backend=self.backend)
        if self.training:
            self.usage += torch.bincount(out.indices, minlength=self.num_codes)
        return out

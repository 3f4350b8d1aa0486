"""Reference vector-quantisation lookup (eager PyTorch, the oracle)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ROWS_PER_CHUNK = 4096
# The fp64 expanded distance |x|^2 - 2 x.c + |c|^2 is within (D + 2) u (|x|^2 + |c|^2) of the exact one
# (u = 2^-53; the dot product's bound, plus the three terms' sum); twice that, rounded up, is the
# window around the row's minimum inside which codes are re-ranked exactly.
_NEAR_TIE_ULPS = 4.0


def nearest_code_reference(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """int64 (M,) index of the nearest code by L2; ties go to the lowest index.

    The oracle must not depend on the machine's BLAS: a matrix product may round the same code's
    distance differently in different columns, so exact duplicate codes could stop tying. Distances
    are first evaluated as ``|x|^2 - 2 x.c + |c|^2`` in float64 (row chunks: never more than a chunk
    of the M x K matrix). Every code within that formula's rounding bound of the row's minimum is a
    candidate, and candidates are re-ranked by ``sum_d (x_d - c_d)^2`` accumulated in float64 in the
    fixed order d = 0..D-1 with elementwise operations only, which round the same way on every
    machine: identical codes tie exactly and the lowest index wins. A row whose minimum is not finite
    (NaN or infinite inputs) keeps ``argmin``'s answer (NaN wins, as in ``torch.argmin``).
    """
    xd, cd = x.detach().double(), codebook.detach().double()
    c_sq = (cd * cd).sum(1)
    c_sq_max = c_sq.max() if c_sq.numel() else c_sq.new_zeros(())
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], _ROWS_PER_CHUNK):
        rows = xd[start : start + _ROWS_PER_CHUNK]
        r_sq = (rows * rows).sum(1)
        dist = torch.addmm(r_sq[:, None] + c_sq, rows, cd.T, alpha=-2.0)
        # the bound with max |c|^2 for every code: one window per row, a little wider, never narrower
        window = _NEAR_TIE_ULPS * (cd.shape[1] + 2) * torch.finfo(torch.float64).eps * (r_sq + c_sq_max)
        out[start : start + _ROWS_PER_CHUNK] = _rerank_near_ties(rows, cd, dist, window)
    return out


# A custom op so that torch.compile (fullgraph) sees one opaque call: the candidates are a
# data-dependent set, which dynamo cannot trace without a graph break.
@torch.library.custom_op("lam_fast_reference::rerank_near_ties", mutates_args=())
def _rerank_near_ties(rows: torch.Tensor, cd: torch.Tensor, dist: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """argmin over the codes of each row, with the candidates within ``window`` of the row's minimum
    ranked by the fixed-order sum of squared differences. rows: (R, D), cd: (K, D), dist: (R, K),
    window: (R,)."""
    best = dist.argmin(1)  # the first minimum
    if dist.shape[1] <= 1 or dist.shape[0] == 0:
        return best
    d_min = dist.gather(1, best[:, None])[:, 0]
    threshold = torch.where(torch.isfinite(d_min), d_min + window, -torch.inf)  # a non-finite minimum: no re-rank
    near = dist <= threshold[:, None]
    contested = near.sum(1) > 1
    if not bool(contested.any()):
        return best
    r, k = near[contested].nonzero(as_tuple=True)
    r = contested.nonzero().flatten()[r]
    exact = torch.zeros(r.shape[0], dtype=torch.float64, device=dist.device)
    for d in range(cd.shape[1]):  # fixed order, elementwise: the same rounding everywhere
        exact += (rows[r, d] - cd[k, d]).square()
    row_min = torch.full_like(d_min, float("inf")).scatter_reduce(0, r, exact, "amin")
    winners = exact == row_min[r]
    lowest = torch.full_like(best, dist.shape[1]).scatter_reduce(0, r[winners], k[winners], "amin")
    return torch.where(contested, lowest, best)


@_rerank_near_ties.register_fake
def _(rows: torch.Tensor, cd: torch.Tensor, dist: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    return dist.new_empty(dist.shape[0], dtype=torch.int64)


def vq_losses(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor):
    """Straight-through quantised vectors and the two VQ-VAE losses for given code indices."""
    codes = codebook[indices]
    quantized = x + (codes - x).detach()
    commitment = F.mse_loss(x, codes.detach())
    codebook_loss = F.mse_loss(codes, x.detach())
    return quantized, commitment, codebook_loss

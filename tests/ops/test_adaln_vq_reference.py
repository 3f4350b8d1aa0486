"""The references of adaln_modulate, gated_residual and vq_lookup against their formulas."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lam_fast.ops import adaln_modulate, gated_residual, vq_lookup
from lam_fast.ops.vq.reference import nearest_code_reference


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@given(seed=st.integers(0, 2**31), b=st.integers(1, 3), t=st.integers(1, 4), n=st.integers(1, 5), c=st.integers(2, 9))
def test_adaln_modulate_formula(seed, b, t, n, c):
    g = torch.Generator().manual_seed(seed)
    x, shift, scale = _rand(g, b, t * n, c), _rand(g, b, t, c), _rand(g, b, t, c)
    out = adaln_modulate(x, shift, scale, frame_tokens=n, eps=1e-6, backend="reference")
    for i in range(t * n):
        frame = i // n
        row = x[:, i]
        normed = (row - row.mean(-1, keepdim=True)) / torch.sqrt(row.var(-1, unbiased=False, keepdim=True) + 1e-6)
        torch.testing.assert_close(out[:, i], normed * (1 + scale[:, frame]) + shift[:, frame])


@given(seed=st.integers(0, 2**31), t=st.integers(1, 4), n=st.integers(1, 5))
def test_gated_residual_formula(seed, t, n):
    g = torch.Generator().manual_seed(seed)
    x, y, gate = _rand(g, 2, t * n, 3), _rand(g, 2, t * n, 3), _rand(g, 2, t, 3)
    out = gated_residual(x, y, gate, frame_tokens=n, backend="reference")
    torch.testing.assert_close(out, x + gate.repeat_interleave(n, dim=1) * y)


def test_adaln_validation():
    x = torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match="shift"):
        adaln_modulate(x, torch.randn(2, 2, 4), torch.randn(2, 3, 4), frame_tokens=2)
    with pytest.raises(ValueError, match="frame_tokens"):
        adaln_modulate(x, torch.randn(2, 3, 4), torch.randn(2, 3, 4), frame_tokens=4)
    with pytest.raises(TypeError, match="dtype"):
        gated_residual(x, x, torch.randn(2, 3, 4, dtype=torch.float64), frame_tokens=2)


@given(seed=st.integers(0, 2**31), m=st.integers(1, 40), k=st.integers(1, 37), d=st.integers(1, 9))
def test_vq_indices_are_brute_force_nearest(seed, m, k, d):
    g = torch.Generator().manual_seed(seed)
    x, codebook = _rand(g, m, d).float(), _rand(g, k, d).float()
    out = vq_lookup(x, codebook, backend="reference")
    brute = ((x.double()[:, None] - codebook.double()[None]) ** 2).sum(-1).argmin(1)
    assert out.indices.dtype == torch.int64
    assert torch.equal(out.indices, brute)
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < k
    torch.testing.assert_close(out.quantized, codebook[out.indices])


def test_vq_ties_go_to_lowest_index_and_idempotent():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]])
    out = vq_lookup(x, codebook, backend="reference")
    assert out.indices.tolist() == [0, 1, 0]
    again = vq_lookup(out.quantized, codebook, backend="reference")
    assert torch.equal(again.indices, out.indices)  # quantising a code returns that code


def test_vq_straight_through_and_losses():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, requires_grad=True)
    codebook = torch.randn(5, 4, generator=g, requires_grad=True)
    out = vq_lookup(x, codebook, backend="reference")
    codes = codebook.detach()[out.indices]
    torch.testing.assert_close(out.commitment_loss, ((x.detach() - codes) ** 2).mean())
    torch.testing.assert_close(out.codebook_loss, out.commitment_loss)
    upstream = torch.randn(6, 4, generator=g)
    (out.quantized * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream)  # straight-through: identity gradient to x
    assert codebook.grad is None or torch.count_nonzero(codebook.grad) == 0
    codebook.grad = None
    out.codebook_loss.backward()
    assert codebook.grad is not None and x.grad is not None


def test_vq_validation():
    with pytest.raises(ValueError, match="codebook"):
        vq_lookup(torch.randn(3, 4), torch.randn(5, 3))
    with pytest.raises(TypeError, match="dtype"):
        vq_lookup(torch.randn(3, 4), torch.randn(5, 4, dtype=torch.float64))


@pytest.mark.parametrize("codes,dim", [(40, 24), (100, 128), (1000, 24), (1000, 128)])
def test_vq_reference_ties_identical_codes_wherever_they_sit(codes, dim):
    """The oracle may not depend on BLAS blocking: every code sits twice in a shuffled codebook (the
    copies land in different column blocks of any matrix product); rows near a code, and rows exactly
    on it, get the lower copy. Random rows match the brute force of the definition."""
    g = torch.Generator().manual_seed(codes + dim)
    distinct = torch.randn(codes // 2, dim, generator=g)
    order = torch.randperm(codes, generator=g)
    codebook = torch.cat([distinct, distinct])[order]
    first_copy = torch.full((codes // 2,), codes)
    first_copy.scatter_reduce_(0, torch.arange(codes)[order] % (codes // 2), torch.arange(codes), reduce="amin")
    near = distinct + 0.01 * torch.randn(codes // 2, dim, generator=g)
    assert torch.equal(nearest_code_reference(near, codebook), first_copy)
    assert torch.equal(nearest_code_reference(distinct, codebook), first_copy)
    y = torch.randn(64, dim, generator=g)
    brute = ((y.double()[:, None] - codebook.double()[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(nearest_code_reference(y, codebook), brute)

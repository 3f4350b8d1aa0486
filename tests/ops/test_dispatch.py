"""The backend dispatcher (lam_fast/ops/_dispatch.py): ``auto`` skips a backend whose optional part is
absent without a word, warns once with the reason about one that is installed but broken, and
``backend_status`` keeps the reason; ops select their backend before touching any state."""

import warnings

import pytest
import torch

from lam_fast.ops import BackendUnavailable, KVCache, backend_status, frame_causal_attention
from lam_fast.ops import _dispatch
from lam_fast.ops._dispatch import OPS, BrokenBackendWarning, NotBuilt, define_op
from lam_fast.ops.attention import reference as attention_reference


def _reference(x):
    return x


@pytest.fixture
def make_op(monkeypatch):
    """An op named ``dispatch_test`` (registered for backend_status) with a reference and a ``cpp``
    backend whose loader raises ``error``."""

    def make(error: BaseException):
        monkeypatch.setattr(_dispatch, "_WARNED", set())  # what earlier tests warned about
        monkeypatch.delitem(OPS, "dispatch_test", raising=False)
        op = define_op("dispatch_test", auto_order={"cpu": ("cpp", "reference")})
        monkeypatch.setitem(OPS, "dispatch_test", op)
        op.register("reference", ("cpu",), lambda: _reference)

        def loader():
            raise error

        op.register("cpp", ("cpu",), loader)
        return op

    return make


ABSENT = {
    "extension not built": ModuleNotFoundError("No module named 'lam_fast._C'", name="lam_fast._C"),
    "triton not installed": ModuleNotFoundError("No module named 'triton'", name="triton"),
    "built without CUDA": NotBuilt("lam_fast._C was built without CUDA kernels"),
}

BROKEN = {
    "undefined symbol": ImportError("lam_fast/_C.so: undefined symbol: _ZN3c104cuda"),
    "shared library": OSError("libc10_cuda.so: cannot open shared object file"),
    "registration": RuntimeError("Tried to register an operator (lam_fast::vq_nearest) with the same name twice"),
    "dependency of an installed module": ModuleNotFoundError("No module named 'numpy'", name="numpy"),
}


@pytest.mark.parametrize("error", ABSENT.values(), ids=ABSENT)
def test_auto_skips_an_absent_backend_quietly(make_op, error):
    op = make_op(error)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        name, impl = op.select("auto", torch.device("cpu"))
    assert (name, impl) == ("reference", _reference)
    assert str(error) in backend_status("dispatch_test")["cpp"]
    assert backend_status("dispatch_test")["reference"] is None


@pytest.mark.parametrize("error", BROKEN.values(), ids=BROKEN)
def test_auto_warns_once_about_a_broken_backend_and_keeps_the_reason(make_op, error):
    op = make_op(error)
    with pytest.warns(BrokenBackendWarning) as record:
        assert op.select("auto", torch.device("cpu"))[0] == "reference"
        op.select("auto", torch.device("cpu"))
        backend_status("dispatch_test")
    assert len(record) == 1
    message = str(record[0].message)
    assert "dispatch_test[cpp]" in message and str(error) in message
    status = backend_status("dispatch_test")["cpp"]
    assert str(error) in status and "broken" in status
    with pytest.raises(BackendUnavailable, match="broken"):  # asked for by name: the reason, as an error
        op.select("cpp", torch.device("cpu"))


def _qkv(frames=1):
    q = torch.randn(1, 1, 4 * frames, 8)
    return q, q.clone(), q.clone()


@pytest.mark.parametrize("max_frames", [None, 4])
@pytest.mark.parametrize("backend", ["nope", "cpp"])
def test_an_unavailable_backend_leaves_the_kv_cache_untouched(max_frames, backend):
    """float64 is not a kernel dtype: ``cpp`` is unavailable for it, as an unknown name is."""
    cache = KVCache(max_frames)
    frame_causal_attention(*_qkv(), frame_tokens=4, kv_cache=cache, backend="reference")
    q, k, v = (x.double() for x in _qkv(2))
    with pytest.raises(BackendUnavailable):
        frame_causal_attention(q, k, v, frame_tokens=4, kv_cache=cache, backend=backend)
    assert cache.num_frames == 1 and cache.length == 4
    out = frame_causal_attention(*_qkv(), frame_tokens=4, kv_cache=cache, backend="reference")
    assert cache.num_frames == 2 and out.shape == (1, 1, 4, 8)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_the_requested_attention_implementation_really_runs(backend):
    """Counted inside the function that computes the attention, not where the dispatcher picks it."""
    q = torch.randn(1, 1, 8, 8)
    before = attention_reference.RUNS.copy()
    frame_causal_attention(q, q, q, frame_tokens=4, backend=backend)
    ran = attention_reference.RUNS - before
    assert ran == {backend: 1}

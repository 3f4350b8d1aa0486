"""Backend dispatch shared by every op.

An op has one public function (its spec) and several implementations: ``reference`` (eager
PyTorch, the oracle) and optimised ones. ``backend="auto"`` walks the op's preference list for the
input's device and takes the first available implementation; an explicitly named backend either
runs or raises :class:`BackendUnavailable` with the reason it cannot. Nothing optional is imported
until a backend is first asked for.

Why a backend cannot load decides how loudly ``auto`` passes it by. Its optional part may be
*absent* (triton not installed, ``lam_fast._C`` not built, built without CUDA kernels): a normal
install, skipped quietly. Or it is there but *broken* (an OSError loading the .so, an ImportError
such as an undefined symbol, a RuntimeError while registering the ops): a real fault that would
otherwise only show as a slow run, so it warns once (:class:`BrokenBackendWarning`). Either way
the reason stays in :func:`backend_status`.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

log = logging.getLogger("lam_fast.ops")

BACKEND_NAMES = ("reference", "sdpa", "triton", "cpp", "cuda")

#: The dtypes of the fused kernels (C++, CUDA, Triton); float64 runs on the reference.
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: How many times :meth:`Op.select` handed out each (op, backend) implementation. What really ran
#: is counted where it runs (the kernels' launch counters, the profiler's op names).
CALLS: Counter[tuple[str, str]] = Counter()

#: Modules a backend may lack on a healthy install: not installed (triton, the [gpu] extra) or not
#: built (the C++/CUDA extension).
OPTIONAL_MODULES = frozenset({"triton", "lam_fast._C"})


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why."""


class NotBuilt(ImportError):
    """A backend's optional part was left out of this install on purpose (e.g. ``lam_fast._C`` built
    without its CUDA kernels): ``auto`` skips it quietly, as a missing optional module."""


class BrokenBackendWarning(RuntimeWarning):
    """A backend is installed but cannot load; ``auto`` falls back to the next one."""


def _absent(exc: BaseException) -> bool:
    """True when ``exc`` says an optional part is not there (not that something present is broken).
    A ModuleNotFoundError names the missing module: only the optional ones themselves count, not a
    dependency that an installed module fails to import."""
    if isinstance(exc, NotBuilt):
        return True
    return isinstance(exc, ModuleNotFoundError) and exc.name in OPTIONAL_MODULES


_WARNED: set[tuple[str, str]] = set()


def _warn_broken(op: str, backend: str, reason: str) -> None:
    """Once per backend and reason: a broken extension fails the same way for every op it serves."""
    if (backend, reason) not in _WARNED:
        _WARNED.add((backend, reason))
        warnings.warn(f"{op}[{backend}] is {reason}; backend 'auto' uses the next one", BrokenBackendWarning,
                      stacklevel=4)


@dataclass
class _Backend:
    op: str
    name: str
    devices: tuple[str, ...]
    loader: Callable[[], Callable]
    dtypes: tuple[torch.dtype, ...] | None = None  # None: every floating dtype
    impl: Callable | None = None
    reason: str | None = None

    def load(self) -> Callable:
        """The implementation; the loader runs once, and a failure is kept as the reason."""
        if self.impl is None and self.reason is None:
            try:
                self.impl = self.loader()
            except (ImportError, OSError, RuntimeError) as exc:
                self.reason = f"{type(exc).__name__}: {exc}"
                if not _absent(exc):
                    self.reason = f"installed but broken: {self.reason}"
                    _warn_broken(self.op, self.name, self.reason)
        if self.impl is None:
            raise BackendUnavailable(self.reason)
        return self.impl


@dataclass
class Op:
    """Registry of one op's backends plus its ``auto`` preference order per device type."""

    name: str
    auto_order: dict[str, tuple[str, ...]]
    backends: dict[str, _Backend] = field(default_factory=dict)
    _logged: set[tuple[str, str]] = field(default_factory=set)

    def register(
        self,
        name: str,
        devices: tuple[str, ...],
        loader: Callable[[], Callable],
        dtypes: tuple[torch.dtype, ...] | None = None,
    ) -> None:
        if name not in BACKEND_NAMES:
            raise ValueError(f"unknown backend name {name!r}; expected one of {BACKEND_NAMES}")
        self.backends[name] = _Backend(self.name, name, devices, loader, dtypes)

    def why_unavailable(
        self, backend: str, device: torch.device | str, dtype: torch.dtype | None = None
    ) -> str | None:
        """None if ``backend`` can run on ``device`` (for inputs of ``dtype``), else the reason it cannot."""
        device_type = torch.device(device).type
        entry = self.backends.get(backend)
        if entry is None:
            known = ", ".join(["auto", *self.backends])
            return f"{self.name} has no backend {backend!r} (known: {known})"
        if device_type not in entry.devices:
            return f"{self.name}[{backend}] runs on {entry.devices}, not on {device_type}"
        if dtype is not None and entry.dtypes is not None and dtype not in entry.dtypes:
            names = ", ".join(str(d).removeprefix("torch.") for d in entry.dtypes)
            return f"{self.name}[{backend}] takes {names} inputs, not {str(dtype).removeprefix('torch.')}"
        try:
            entry.load()
        except BackendUnavailable as exc:
            return f"{self.name}[{backend}] is unavailable: {exc}"
        return None

    def auto_backend(self, device: torch.device | str, dtype: torch.dtype | None = None) -> str:
        """The backend ``auto`` picks for tensors on ``device`` (of ``dtype``, when given)."""
        device_type = torch.device(device).type
        for name in self.auto_order.get(device_type, ("reference",)):
            if name in self.backends and self.why_unavailable(name, device_type, dtype) is None:
                return name
        return "reference"

    def select(self, backend: str, device: torch.device, dtype: torch.dtype | None = None) -> tuple[str, Callable]:
        if backend == "auto":
            name = self.auto_backend(device, dtype)
            if (device.type, name) not in self._logged:
                self._logged.add((device.type, name))
                log.info("%s: backend 'auto' picked %r on %s", self.name, name, device.type)
        else:
            reason = self.why_unavailable(backend, device, dtype)
            if reason is not None:
                raise BackendUnavailable(reason)
            name = backend
        if not torch.compiler.is_compiling():  # a guarded counter would force a recompile per call
            CALLS[(self.name, name)] += 1
        return name, self.backends[name].load()


OPS: dict[str, Op] = {}


def define_op(name: str, auto_order: dict[str, tuple[str, ...]]) -> Op:
    op = Op(name, auto_order)
    OPS[name] = op
    return op


def _op(name: str) -> Op:
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; known ops: {sorted(OPS)}")
    return OPS[name]


def auto_backend(op: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> str:
    """Which backend ``backend="auto"`` uses for ``op`` on ``device`` (for inputs of ``dtype``)."""
    return _op(op).auto_backend(device, dtype)


def backend_status(op: str, device: torch.device | str = "cpu") -> dict[str, str | None]:
    """Every registered backend of ``op`` mapped to None (usable on ``device``) or the reason not."""
    entry = _op(op)
    return {name: entry.why_unavailable(name, device) for name in entry.backends}

"""Backend dispatch shared by every op.

An op has one public function (its spec) and several implementations: ``reference`` (eager
PyTorch, the oracle) and optimised ones. ``backend="auto"`` walks the op's preference list for the
input's device and takes the first available implementation; an explicitly named backend either
runs or raises :class:`BackendUnavailable` with the reason it cannot. Nothing optional is imported
until a backend is first asked for.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

log = logging.getLogger("lam_fast.ops")

BACKEND_NAMES = ("reference", "sdpa", "triton", "cpp", "cuda")

#: The dtypes of the fused kernels (C++, CUDA, Triton); float64 runs on the reference.
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: How many times each (op, backend) implementation was entered; tests use it to prove that a
#: requested fast path really ran instead of silently falling back.
CALLS: Counter[tuple[str, str]] = Counter()


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why."""


@dataclass
class _Backend:
    name: str
    devices: tuple[str, ...]
    loader: Callable[[], Callable]
    dtypes: tuple[torch.dtype, ...] | None = None  # None: every floating dtype
    impl: Callable | None = None
    reason: str | None = None

    def load(self) -> Callable:
        if self.impl is None and self.reason is None:
            try:
                self.impl = self.loader()
            except (ImportError, OSError, RuntimeError) as exc:
                self.reason = f"{type(exc).__name__}: {exc}"
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
        self.backends[name] = _Backend(name, devices, loader, dtypes)

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

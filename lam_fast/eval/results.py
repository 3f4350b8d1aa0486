"""Typed result records: one frozen dataclass per kind of result file, shared by the command that
writes the file and everything that reads it (``lam-fast report``, the figures, the reproduction
sweep), so a key is named in one place and a file that lacks one fails loudly, naming the file and
the key, instead of a reader's ``.get`` quietly printing ``-``.

Kinds (``RESULT_TYPES``; the JSON key ``"protocol"`` names the kind):

================  =========================  ============================================
``protocol``      record                     written by
================  =========================  ============================================
``leakage``       :class:`LeakageResult`     ``lam-fast eval leakage``
``transfer``      :class:`TransferResult`    ``lam-fast eval transfer``
``capacity``      :class:`CapacityResult`    ``lam-fast eval capacity``
``controller``    :class:`ControllerResult`  ``lam-fast train-controller``
``action_model``  :class:`ActionModelResult` ``lam-fast train-action-model``
``plan``          :class:`PlanResult`        ``lam-fast plan``
``decoder``       :class:`DecoderResult`     ``lam-fast train-decoder --json``
================  =========================  ============================================

Why ``"protocol"`` and not a new ``"kind"`` key: every writer but ``train-decoder`` has written
``"protocol"`` since its first version, and the controller's results already use ``"kind"`` for
the controller's architecture (``cross`` / ``mlp``). Files without ``"protocol"`` (decoder
metrics written before this module) get their kind from their content in :func:`result_kind`,
the one place that does so; a file's name is never consulted.

Fields without a default are required. Fields whose default is :data:`ABSENT` are the keys a
file may lack (a figure's ``figure_reason`` when the figure was drawn, the reacher metrics of a
nav plan, ...); :meth:`Record.to_dict` leaves them out, so a file written from a record has the
keys its writer wrote before. A key that is neither a field nor ``"protocol"`` is an error.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from lam_fast.io import write_text_atomic

#: the JSON key that names a result's kind
KIND_KEY = "protocol"


class _Absent(enum.Enum):
    """The type of :data:`ABSENT` (an enum member: one instance, survives copy and pickle)."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


#: default of a field whose key a result file may lack (distinct from ``None``, which is JSON null)
ABSENT = _Absent.ABSENT


def _plain(value: Any) -> Any:
    """A record, or lists / dicts of records, as JSON-ready lists and dicts."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class Record:
    """Base of every record: strict conversion from and to the dicts of a JSON file.

    ``_NESTED`` maps a field to the record type of its value (a record type in a 1-tuple: a list
    of such records), for the fields that hold nested objects.
    """

    _NESTED: ClassVar[Mapping[str, type[Record] | tuple[type[Record]]]] = {}
    _HEADER_KEYS: ClassVar[tuple[str, ...]] = ()  # keys that are not fields (a result's kind)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record (fields holding :data:`ABSENT` are left out)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not ABSENT}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>"):
        """The record of ``data``; ValueError naming ``source`` (a file name) and the first missing
        or unknown key, or the reason a value does not fit."""
        values = cls._values(data, source)
        try:
            return cls(**values)
        except ValueError as error:  # a record's own consistency check (__post_init__)
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def _values(cls, data: Any, source: str) -> dict[str, Any]:
        """The constructor's arguments from ``data`` (the checks of :meth:`from_dict`)."""
        label = cls.__name__
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object for {label}, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = [key for key in data if key not in known and key not in cls._HEADER_KEYS]
        if unknown:
            raise ValueError(f"{source}: unknown key {unknown[0]!r} in {label}")
        values = {}
        for name, f in known.items():
            if name not in data:
                if f.default is ABSENT:
                    continue
                raise ValueError(f"{source}: missing key {name!r} in {label}")
            values[name] = cls._nested_value(name, data[name], f"{source}: {name}")
        return values

    @classmethod
    def _nested_value(cls, name: str, value: Any, source: str) -> Any:
        kind = cls._NESTED.get(name)
        if kind is None:
            return value
        if isinstance(kind, tuple):
            if not isinstance(value, list):
                raise ValueError(f"{source}: expected a list, got {type(value).__name__}")
            return tuple(kind[0].from_dict(item, f"{source}[{i}]") for i, item in enumerate(value))
        return kind.from_dict(value, source)


@dataclass(frozen=True, kw_only=True)
class Result(Record):
    """A record that is a whole result file: its kind (``protocol``) goes into the JSON first.

    ``json_format``: the ``json.dumps`` options its writer used before this module (indentation,
    sorted keys, and whether NaN may be written), so the files stay as they were.
    """

    protocol: ClassVar[str]
    _HEADER_KEYS: ClassVar[tuple[str, ...]] = (KIND_KEY,)
    json_format: ClassVar[Mapping[str, Any]] = {"indent": 2}

    def to_dict(self) -> dict[str, Any]:
        return {KIND_KEY: self.protocol, **super().to_dict()}

    @classmethod
    def _values(cls, data: Any, source: str) -> dict[str, Any]:
        kind = result_kind(data, source)
        if kind != cls.protocol:
            raise ValueError(f"{source}: key {KIND_KEY!r} is {kind!r}, expected {cls.protocol!r} for {cls.__name__}")
        return super()._values(data, source)


# ------------------------------------------------------------------------- eval protocols


@dataclass(frozen=True, kw_only=True)
class _Figure:
    """The figure of an eval protocol: its path, or null with the reason it was not drawn.

    ``figure`` is absent in files written before the protocols drew figures.
    """

    figure: str | None | _Absent = ABSENT
    figure_reason: str | _Absent = ABSENT


@dataclass(frozen=True, kw_only=True)
class _PairedClips(_Figure, Result):
    """What leakage and transfer share: errors on clips paired i -> i + 1, and where they came from."""

    headline: ClassVar[str]  # the field holding the error with the change (cut / transferred latents)

    error_original: float
    ratio: float
    per_clip: dict[str, list[float]]
    metric: str
    ckpt: str
    data: str
    clip_sources: list[str]
    reg: str
    encoder: str

    @property
    def error_changed_or_transferred(self) -> float:
        """The headline error: after the cut (leakage) or with cycled latents (transfer)."""
        return getattr(self, self.headline)


@dataclass(frozen=True, kw_only=True)
class LeakageResult(_PairedClips):
    """``lam-fast eval leakage`` (:func:`lam_fast.eval.protocols.leakage`)."""

    protocol: ClassVar[str] = "leakage"
    headline: ClassVar[str] = "error_changed"
    error_changed: float
    cut: int
    clips: int


@dataclass(frozen=True, kw_only=True)
class TransferResult(_PairedClips):
    """``lam-fast eval transfer`` (:func:`lam_fast.eval.protocols.transfer`; no ``clips`` key:
    :attr:`clips` counts ``clip_sources``)."""

    protocol: ClassVar[str] = "transfer"
    headline: ClassVar[str] = "error_transferred"
    error_transferred: float
    targets: list[int]
    rollout_steps: int

    @property
    def clips(self) -> int:
        return len(self.clip_sources)


@dataclass(frozen=True, kw_only=True)
class CapacityBaseline(Record):
    """The deterministic baseline of a capacity sweep."""

    run: str
    reg: str
    error: float
    per_clip: list[float]


@dataclass(frozen=True, kw_only=True)
class CapacityRun(Record):
    """One latent run of a capacity sweep (``capacity_knob`` / ``knob_value`` null for ``none``)."""

    run: str
    reg: str
    capacity_knob: str | None
    knob_value: float | int | None
    error: float
    rel_to_baseline: float
    per_clip: list[float]


@dataclass(frozen=True, kw_only=True)
class CapacityResult(_Figure, Result):
    """``lam-fast eval capacity`` (:func:`lam_fast.eval.protocols.capacity`)."""

    protocol: ClassVar[str] = "capacity"
    _NESTED: ClassVar[Mapping[str, Any]] = {"baseline": CapacityBaseline, "runs": (CapacityRun,)}
    baseline: CapacityBaseline
    runs: tuple[CapacityRun, ...]
    clips: int
    metric: str
    data: str
    clip_sources: list[str]
    encoder: str
    image_size: int
    num_frames: int
    fps: float


# ------------------------------------------------------------------------- sim tasks


_SIM_FORMAT: Mapping[str, Any] = {"indent": 1, "sort_keys": True}


@dataclass(frozen=True, kw_only=True)
class _SimTraining(Result):
    """What the controller and the action-model results share: the task, the data and the fit."""

    json_format: ClassVar[Mapping[str, Any]] = _SIM_FORMAT
    task: str
    data: str
    steps: int
    loss_first: float
    loss_final: float
    episodes_train: int
    episodes_heldout: int
    seconds: float


@dataclass(frozen=True, kw_only=True)
class ControllerResult(_SimTraining):
    """``lam-fast train-controller``: rollout errors with IDM vs controller latents on held-out
    episodes (``kind``: the controller's architecture, ``cross`` or ``mlp``)."""

    protocol: ClassVar[str] = "controller"
    rollout_error_idm: float
    rollout_error_controller: float
    ratio: float
    rollout_error_copy: float
    rollout_steps: int
    windows: int
    kind: str
    ckpt: str
    reg: str
    controller: str
    heldout_latent_l2: float
    heldout_latent_variance: float
    heldout_r2: float
    transitions_train: int


@dataclass(frozen=True, kw_only=True)
class ActionModelResult(_SimTraining):
    """``lam-fast train-action-model``: held-out one-step error of the action-conditioned baseline."""

    protocol: ClassVar[str] = "action_model"
    one_step_error: float
    one_step_error_copy: float
    rel_to_copy: float


@dataclass(frozen=True, kw_only=True)
class PlanResult(Result):
    """``lam-fast plan``: a policy's plans on the held-out problems of a sim task, scored by the
    task's metrics (:attr:`TASK_METRICS`; the other task's keys are absent). ``final_cost`` is
    absent for the random policy; ``ckpt`` / ``controller`` are null where not used."""

    protocol: ClassVar[str] = "plan"
    json_format: ClassVar[Mapping[str, Any]] = _SIM_FORMAT
    TASK_METRICS: ClassVar[Mapping[str, tuple[str, str]]] = {
        "reacher": ("delta_actions", "end_effector_error"), "nav": ("ate", "rpe")}
    task: str
    policy: str
    method: str
    episodes: int
    problems: int
    samples: int
    elites: int
    iterations: int
    horizon: int
    hold: int
    seed: int
    per_problem: dict[str, list[float]]
    units: dict[str, str]
    planned_actions: list
    data: str
    ckpt: str | None
    controller: str | None
    seconds: float
    delta_actions: float | _Absent = ABSENT
    end_effector_error: float | _Absent = ABSENT
    ate: float | _Absent = ABSENT
    rpe: float | _Absent = ABSENT
    final_cost: float | _Absent = ABSENT

    def __post_init__(self):
        if self.task not in self.TASK_METRICS:
            raise ValueError(f"unknown task {self.task!r} (expected one of {', '.join(self.TASK_METRICS)})")
        for name in self.TASK_METRICS[self.task]:
            if getattr(self, name) is ABSENT:
                raise ValueError(f"missing key {name!r} in PlanResult (a {self.task} plan)")

    @property
    def metrics(self) -> dict[str, float]:
        """The task's metrics by name, in the order of :attr:`TASK_METRICS`."""
        return {name: getattr(self, name) for name in self.TASK_METRICS[self.task]}


# ------------------------------------------------------------------------- decoder


@dataclass(frozen=True, kw_only=True)
class DecoderResult(Result):
    """``lam-fast train-decoder``: held-out reconstruction metrics of a state-to-pixel decoder.
    ``psnr`` / ``lpips`` / ``inverse_psnr`` are null where not finite or not computable;
    ``lpips_reason`` is present when ``lpips`` is null, ``inverse_psnr`` only for the pixels
    encoder. Written without NaN (``allow_nan=False``), as before."""

    protocol: ClassVar[str] = "decoder"
    json_format: ClassVar[Mapping[str, Any]] = {"indent": 2, "allow_nan": False}
    l1: float
    psnr: float | None
    ssim: float
    lpips: float | None
    steps: int
    clips_train: int
    clips_heldout: int
    train_l1_first: float
    train_l1_last: float
    lpips_reason: str | _Absent = ABSENT
    inverse_psnr: float | None | _Absent = ABSENT
    encoder: str
    image_size: int
    num_frames: int
    fps: float
    ckpt: str
    data: str
    seed: int


# ------------------------------------------------------------------------- files


#: every kind of result file, by its ``protocol``
RESULT_TYPES: dict[str, type[Result]] = {cls.protocol: cls for cls in (
    LeakageResult, TransferResult, CapacityResult, ControllerResult, ActionModelResult, PlanResult, DecoderResult)}

AnyResult = (LeakageResult | TransferResult | CapacityResult | ControllerResult | ActionModelResult | PlanResult
             | DecoderResult)

#: keys every decoder-metrics file has held, with or without ``protocol``
_DECODER_KEYS = frozenset({"l1", "psnr", "ssim", "lpips", "clips_heldout"})


def result_kind(data: Any, source: str = "<dict>") -> str:
    """The kind of a result file's object: its ``"protocol"``, or, for a file without one, the
    kind its content shows. The only content rule: decoder metrics (``lam-fast train-decoder
    --json`` wrote no ``protocol`` before this module) are recognised by their keys ``l1``,
    ``psnr``, ``ssim``, ``lpips``, ``clips_heldout``. Every other writer always wrote
    ``protocol``. ValueError naming ``source`` when there is no kind."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if KIND_KEY in data:
        kind = data[KIND_KEY]
        if kind not in RESULT_TYPES:
            raise ValueError(f"{source}: key {KIND_KEY!r} is {kind!r}, not a known result kind "
                             f"({', '.join(RESULT_TYPES)})")
        return kind
    if _DECODER_KEYS <= data.keys():
        return DecoderResult.protocol
    raise ValueError(f"{source}: missing key {KIND_KEY!r} (and not decoder metrics): not a known result")


def result_from_dict(data: Any, source: str = "<dict>") -> AnyResult:
    """The record of a result file's object, of the kind :func:`result_kind` finds."""
    return RESULT_TYPES[result_kind(data, source)].from_dict(data, source)


def read_result(path: str | os.PathLike[str]) -> AnyResult:
    """Read one result file. ValueError naming the file for invalid JSON, no kind, or a missing
    or unknown key; OSError / UnicodeDecodeError when it cannot be read."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON: {error}") from None
    return result_from_dict(data, str(path))


def write_result(path: str | os.PathLike[str], result: Result) -> Path:
    """Write ``result`` to ``path`` atomically and durably (``lam_fast.io``), creating the folder,
    in the JSON format its kind was always written in (:attr:`Result.json_format`)."""
    if not isinstance(result, Result):
        raise TypeError(f"write_result takes a result record, got {type(result).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(result.to_dict(), **result.json_format) + "\n")


__all__ = ["ABSENT", "KIND_KEY", "RESULT_TYPES", "ActionModelResult", "AnyResult", "CapacityBaseline",
           "CapacityResult", "CapacityRun", "ControllerResult", "DecoderResult", "LeakageResult", "PlanResult",
           "Record", "Result", "TransferResult", "read_result", "result_from_dict", "result_kind", "write_result"]

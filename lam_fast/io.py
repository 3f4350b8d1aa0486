"""The I/O leaf: durable atomic writes, pickle-free nested state, library versions, the run lock.

Every layer may import this module and it imports nothing of lam_fast (only torch and
safetensors, which are hard dependencies). One durability rule for every file the package writes:
write under a temporary name in the target's folder, fsync the file, rename it into place, fsync
the folder. A crash at any moment leaves either the old file or the new one, never a torn one, and
the temporary name (``.<name>.<pid>-<random>.tmp``: hidden, no data extension) is never picked up
by a folder scan for videos, shards or checkpoints; it is removed when the write fails.

Reading is checked as strictly: :func:`check_safetensors` and :func:`check_tree` say which file is
torn or malformed (and why) before anything is loaded. :class:`DirectoryLock` is the one-writer rule
of a run directory, and :func:`fault_point` the kill -9 injection points the fault tests use.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import signal
import socket
import struct
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from lam_fast.errors import RunLocked

TMP_SUFFIX = ".tmp"
#: the lock file of a run directory (:class:`DirectoryLock`)
LOCK_FILE = ".lock"
#: ``LAM_FAST_FAULT=<phase>`` or ``<phase>@<n>``: SIGKILL this process the n-th time (default the
#: first) it reaches the injection point ``phase`` (:func:`fault_point`); for the fault tests only
FAULT_ENV = "LAM_FAST_FAULT"
_fault_hits: dict[str, int] = {}

#: distributions whose versions :func:`versions` records when they are installed
_OPTIONAL_DISTRIBUTIONS = ("deepspeed", "safetensors", "av", "transformers", "triton", "nvidia-dali-cuda130",
                           "opencv-python-headless", "decord", "mujoco")


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file to disk, so a rename that publishes it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened or synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(target: str | os.PathLike[str]) -> Path:
    """A fresh temporary name next to ``target`` (same folder, so the final rename is atomic)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


def atomic_write(target: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Create or replace ``target`` atomically and durably; ``write(path)`` writes the content.

    ``write`` receives the temporary path to fill. On any failure the temporary file is removed
    and ``target`` is left as it was. Returns ``target``.
    """
    target = Path(target)
    temporary = temporary_path(target)
    try:
        write(temporary)
        fault_point(f"mid_write:{target.name}", torn=temporary)
        fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    fsync_dir(target.parent)
    return target


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically and durably."""
    return atomic_write(target, lambda path: path.write_text(text, encoding="utf-8"))


def write_json_atomic(target: str | os.PathLike[str], payload: Any, *, indent: int | None = 1,
                      sort_keys: bool = False) -> Path:
    """Write ``payload`` as JSON (newline-terminated) to ``target`` atomically and durably."""
    return write_text_atomic(target, json.dumps(payload, indent=indent, sort_keys=sort_keys) + "\n")


def save_safetensors_atomic(target: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], *,
                            metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` (made contiguous) as a safetensors file atomically and durably."""
    from safetensors.torch import save_file

    contiguous = {key: value.contiguous() for key, value in tensors.items()}
    meta = dict(metadata) if metadata is not None else None
    return atomic_write(target, lambda path: save_file(contiguous, os.fspath(path), metadata=meta))


def publish_dir(staging: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Rename a fully written ``staging`` folder to ``final`` (which must not exist) and make the
    rename durable. The files inside must already be fsynced (write them with this module)."""
    staging, final = Path(staging), Path(final)
    for path in staging.rglob("*"):
        if path.is_dir():
            fsync_dir(path)
    fsync_dir(staging)
    os.replace(staging, final)
    fsync_dir(final.parent)
    return final


def versions() -> dict[str, str]:
    """Versions of lam_fast, torch, python and each optional library that is installed."""
    from lam_fast._version import __version__

    found = {"lam_fast": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for dist in _OPTIONAL_DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


# ------------------------------------------------------------------ pickle-free nested state

_SCALARS = (int, float, str, bool, type(None))


def _pack(obj, path: str, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, (list, tuple)):
        items = [_pack(v, f"{path}[{i}]", tensors) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"cannot checkpoint dict key {k!r} of type {type(k).__name__} at {path}")
        return {"__dict__": [[k, _pack(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot checkpoint a {type(obj).__module__}.{type(obj).__name__} at {path}")


#: every name ``_pack`` writes for a dtype (``str(dtype)`` without ``torch.``); nothing else is read back
DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name)
    for name in ("float64", "float32", "float16", "bfloat16", "complex128", "complex64", "complex32", "int64",
                 "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool", "float8_e4m3fn",
                 "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
    if isinstance(getattr(torch, name, None), torch.dtype)
}


def dtype_named(name) -> torch.dtype:
    """The torch dtype called ``name`` (``"float32"``); ValueError naming it for anything else."""
    if not isinstance(name, str) or name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r} (expected one of {', '.join(sorted(DTYPES))})")
    return DTYPES[name]


def _unpack(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dtype__" in obj:
            return dtype_named(obj["__dtype__"])
        if "__tuple__" in obj:
            return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
        return {k: _unpack(v, tensors) for k, v in obj["__dict__"]}
    return obj


def save_tree(obj, prefix: str | os.PathLike[str]) -> None:
    """Write a tree of dicts, lists, tuples, tensors, dtypes and JSON scalars (an optimizer or RNG
    state) as ``prefix.json`` (the skeleton) and ``prefix.safetensors`` (the tensors), atomically.

    Loading (:func:`load_tree`) rebuilds only those types, so the files can never execute code.
    Anything else raises TypeError naming the offending path and type.
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(obj, "state", tensors)
    save_safetensors_atomic(f"{os.fspath(prefix)}.safetensors", tensors)
    write_json_atomic(f"{os.fspath(prefix)}.json", skeleton, indent=None)


def load_tree(prefix: str | os.PathLike[str], device: str | torch.device = "cpu"):
    """Read a tree written by :func:`save_tree`."""
    from safetensors.torch import load_file

    tensors = load_file(f"{os.fspath(prefix)}.safetensors", device=str(device))
    with open(f"{os.fspath(prefix)}.json", encoding="utf-8") as f:
        return _unpack(json.load(f), tensors)


# ------------------------------------------------------------------ checking files before reading them

#: bytes per element of each safetensors dtype (a dtype not listed is checked for coverage only)
_SAFETENSORS_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                      "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def check_safetensors(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a safetensors file, after checking that it is whole: a readable JSON
    header, every tensor's byte range the size its dtype and shape need, and the file exactly as long
    as the header and the data. ValueError naming the file and what is wrong (OSError if unreadable)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path.name}: truncated ({size} bytes, not even a header length)")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            raise ValueError(f"{path.name}: truncated (header of {length} bytes, file of {size})")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path.name}: unreadable header ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name}: the header is not a JSON object")
    shapes, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            shape, (begin, stop), dtype = tuple(int(n) for n in entry["shape"]), entry["data_offsets"], entry["dtype"]
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{path.name}: malformed header entry for {name!r}") from None
        width = _SAFETENSORS_BYTES.get(dtype)
        if width is not None and stop - begin != width * math.prod(shape):
            raise ValueError(f"{path.name}: tensor {name!r} has {stop - begin} bytes, {dtype} {list(shape)} needs "
                             f"{width * math.prod(shape)}")
        shapes[name], end = shape, max(end, stop)
    if size != 8 + length + end:
        what = "truncated" if size < 8 + length + end else "trailing bytes"
        raise ValueError(f"{path.name}: {what} ({size} bytes, the header describes {8 + length + end})")
    return shapes


def check_tree(prefix: str | os.PathLike[str]) -> None:
    """Check the pair written by :func:`save_tree` without loading it: the safetensors file whole,
    the JSON skeleton readable, every tensor it names present, every dtype it names a real one.
    ValueError (or OSError) naming the file and what is wrong."""
    prefix = os.fspath(prefix)
    keys = set(check_safetensors(f"{prefix}.safetensors"))
    name = Path(f"{prefix}.json").name
    try:
        with open(f"{prefix}.json", encoding="utf-8") as f:
            skeleton = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{name}: not JSON ({error})") from None
    stack = [skeleton]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "__tensor__" in node and node["__tensor__"] not in keys:
                raise ValueError(f"{name}: names tensor {node['__tensor__']!r}, which {Path(prefix).name}.safetensors lacks")
            if "__dtype__" in node:
                try:
                    dtype_named(node["__dtype__"])
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
            stack.extend(node.values())


# ------------------------------------------------------------------ one writer per run directory

class DirectoryLock:
    """An exclusive OS lock (``flock``) on ``directory/.lock``, held from :meth:`acquire` to
    :meth:`release` (or the ``with`` block). The kernel drops it when the holder exits, also on
    kill -9, so the lock of a dead process never blocks; the file records the holder's pid and host
    for the message of the next one. A second holder, in this or another process, gets
    :class:`~lam_fast.errors.RunLocked`. The file stays (removing it would let two holders lock two
    different files)."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "DirectoryLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is in use by another run ({holder}, lock file {self.path}); "
                            "wait for it to end, or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock

    def __del__(self) -> None:  # an abandoned holder (never released) lets go when collected
        try:
            self.release()
        except OSError:
            pass

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_holder(fd: int) -> str:
    """'pid 123 on host h' from a lock file's content (written by its holder right after locking)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {int(holder['pid'])} on host {holder['host']}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "pid and host not recorded yet"


def fault_point(phase: str, *, torn: str | os.PathLike[str] | None = None) -> None:
    """An injection point of the fault tests: when ``LAM_FAST_FAULT`` names ``phase`` (``phase`` or
    ``phase@n`` for its n-th visit), SIGKILL this process here, after cutting the file ``torn``
    (a write in progress) to half its length. A no-op otherwise."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, count = wanted.partition("@")
    if name != phase:
        return
    _fault_hits[phase] = _fault_hits.get(phase, 0) + 1
    if _fault_hits[phase] < int(count or 1):
        return
    if torn is not None:
        os.truncate(torn, os.path.getsize(torn) // 2)
    os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------ weights with a JSON sidecar

def save_weights_with_meta(weights: str | os.PathLike[str], meta_path: str | os.PathLike[str],
                           tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Write a module's weights, then its JSON description (the JSON last: a crash leaves the
    previous pair, or weights that no description names yet). NaN in ``meta`` raises ValueError
    before any file is touched."""
    text = json.dumps(dict(meta), indent=2, allow_nan=False) + "\n"
    save_safetensors_atomic(weights, {key: value.detach().cpu() for key, value in tensors.items()})
    write_text_atomic(meta_path, text)


def load_weights_with_meta(weights: str | os.PathLike[str], meta_path: str | os.PathLike[str],
                           device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a pair written by :func:`save_weights_with_meta`: ``(tensors, meta)``."""
    from safetensors.torch import load_file

    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    return load_file(os.fspath(weights), device=str(device)), meta

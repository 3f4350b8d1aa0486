"""The I/O leaf: durable atomic writes, pickle-free nested state, library versions.

Every layer may import this module and it imports nothing of lam_fast (only torch and
safetensors, which are hard dependencies). One durability rule for every file the package writes:
write under a temporary name in the target's folder, fsync the file, rename it into place, fsync
the folder. A crash at any moment leaves either the old file or the new one, never a torn one, and
the temporary name (``.<name>.<pid>-<random>.tmp``: hidden, no data extension) is never picked up
by a folder scan for videos, shards or checkpoints; it is removed when the write fails.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

TMP_SUFFIX = ".tmp"

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


def _unpack(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dtype__" in obj:
            return getattr(torch, obj["__dtype__"])
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

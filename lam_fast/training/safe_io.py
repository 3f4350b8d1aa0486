"""Pickle-free serialisation of nested state (optimizer/scheduler state dicts, RNG states).

A tree of dicts, lists, tuples, tensors and JSON scalars is split into a JSON skeleton and a
safetensors file holding the tensors. Loading reconstructs only those types, so a checkpoint can
never execute code. Anything else raises TypeError naming the offending path and type.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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


def save_tree(obj, prefix: str | Path) -> None:
    """Write ``prefix.json`` and ``prefix.safetensors``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(obj, "state", tensors)
    save_file(tensors, f"{prefix}.safetensors")
    fsync_file(f"{prefix}.safetensors")
    with open(f"{prefix}.json", "w") as f:
        json.dump(skeleton, f)
        f.flush()
        os.fsync(f.fileno())


def fsync_file(path: str | Path) -> None:
    """Flush a written file to disk, so a rename that publishes it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_tree(prefix: str | Path, device: str | torch.device = "cpu"):
    tensors = load_file(f"{prefix}.safetensors", device=str(device))
    with open(f"{prefix}.json") as f:
        return _unpack(json.load(f), tensors)

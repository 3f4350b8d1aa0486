"""lam_fast.io (issue 13): the dtype names a state tree may hold are the real dtypes only; files are
checked whole before they are read; the run-directory lock is exclusive and names its holder."""

import json
import os
import socket

import pytest
import torch
from safetensors.torch import save_file

from lam_fast.errors import RunLocked
from lam_fast.io import DTYPES, DirectoryLock, check_safetensors, check_tree, load_tree, save_tree


def test_every_dtype_round_trips_and_a_torch_attribute_is_not_a_dtype(tmp_path):
    state = {name: dtype for name, dtype in DTYPES.items()}
    save_tree(state, tmp_path / "d")
    assert load_tree(tmp_path / "d") == state
    for bad in ("load", "nn", "float", "__class__", 7):  # torch attributes (and aliases) that _pack never writes
        (tmp_path / "bad.json").write_text(json.dumps({"__dict__": [["x", {"__dtype__": bad}]]}))
        save_file({}, str(tmp_path / "bad.safetensors"))
        with pytest.raises(ValueError, match=f"unknown dtype {bad!r}"):
            load_tree(tmp_path / "bad")
        with pytest.raises(ValueError, match=rf"bad\.json: unknown dtype {bad!r}"):
            check_tree(tmp_path / "bad")


def test_check_safetensors_names_what_is_wrong(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(3, 4), "b": torch.zeros(2, dtype=torch.int64)}, str(path))
    assert check_safetensors(path) == {"a": (3, 4), "b": (2,)}
    whole = path.read_bytes()
    cases = {whole[:5]: r"truncated \(5 bytes, not even a header length", whole[:40]: "truncated", whole[:-1]: "truncated",
             whole + b"\0": "trailing bytes", b"\x08" + b"\0" * 7 + b"not json": "unreadable header"}
    for content, why in cases.items():
        path.write_bytes(content)
        with pytest.raises(ValueError, match=f"w.safetensors: {why}"):
            check_safetensors(path)


def test_check_tree_wants_every_tensor_it_names(tmp_path):
    save_tree({"a": torch.ones(2), "b": [torch.zeros(1)]}, tmp_path / "t")
    check_tree(tmp_path / "t")
    save_file({"t0": torch.ones(2)}, str(tmp_path / "t.safetensors"))  # t1 gone
    with pytest.raises(ValueError, match="t.json: names tensor 't1', which t.safetensors lacks"):
        check_tree(tmp_path / "t")


def test_the_directory_lock_is_exclusive_and_names_its_holder(tmp_path):
    with DirectoryLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(RunLocked, match=rf"run is in use by another run \(pid {os.getpid()} on host "
                                            rf"{socket.gethostname()}, lock file .*\.lock\)"):
            DirectoryLock(tmp_path / "run").acquire()
    with DirectoryLock(tmp_path / "run"):  # released
        pass

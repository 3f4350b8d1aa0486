"""The lock (.ci/constraints.txt): every dependency pinned, well formed, and a user's own torch kept."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lam_fast_ci_lock", ROOT / ".ci" / "lock.py")
lock_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_tool)


def _requirement_name(requirement: str) -> str:
    return lock_tool.canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def _declared_dependencies() -> set[str]:
    """Every distribution pyproject.toml names: build requirements, dependencies, every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(project["build-system"]["requires"]) + list(project["project"]["dependencies"])
    for extra in project["project"]["optional-dependencies"].values():
        reqs += extra
    return {_requirement_name(r) for r in reqs} - {"lam-fast"}  # lam_fast[...] : the project's own extras


def test_every_dependency_of_pyproject_is_pinned():
    pins = lock_tool.read_lock(lock_tool.DEFAULT_LOCK)
    missing = sorted(_declared_dependencies() - set(pins))
    assert not missing, f"dependencies of pyproject.toml without a pin in .ci/constraints.txt: {missing} (make lock)"


def test_lock_pins_satisfy_pyproject_lower_bounds():
    """A pin below a `>=` of pyproject.toml would make the install fail: catch it here, not in CI."""
    pins = lock_tool.read_lock(lock_tool.DEFAULT_LOCK)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]

    def release(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.match(r"[0-9]+(?:\.[0-9]+)*", version).group(0).split("."))

    for req in reqs:
        for op, bound in re.findall(r"(>=|==)\s*([0-9][0-9.]*)", req):
            name = _requirement_name(req)
            if name == "lam-fast":
                continue
            pinned = release(pins[name][1])
            assert pinned >= release(bound) if op == ">=" else pinned[: len(release(bound))] == release(bound), (
                f"{req!r}: the lock pins {pins[name][1]}")


def test_malformed_lock_lines_are_named(tmp_path):
    bad = tmp_path / "lock.txt"
    bad.write_text("# comment\nnumpy==2.4.6\ntorch>=2\n")
    with pytest.raises(ValueError, match=r"lock.txt:3: not a 'name==version' pin: 'torch>=2'"):
        lock_tool.read_lock(bad)
    bad.write_text("numpy==2.4.6\nNumPy==2.4.5\n")
    with pytest.raises(ValueError, match="pinned twice"):
        lock_tool.read_lock(bad)


_LOCK = {"torch": ("torch", "2.13.0+cpu"), "triton": ("triton", "3.9.0"), "numpy": ("numpy", "2.4.6"),
         "nvidia-nccl-cu13": ("nvidia-nccl-cu13", "2.28.0"), "sympy": ("sympy", "1.14.0")}


def test_constraints_keep_a_users_own_torch():
    """A CUDA torch already in the venv: its pin goes, and so do the pins of its requirements installed
    there at other versions (what pip resolved for that torch, e.g. triton~=3.8.0); the rest stays."""
    cuda_torch = ("2.14.1+cu130", {"triton": "3.8.0", "nvidia-nccl-cu13": "2.29.1", "sympy": "1.14.0",
                                   "numpy": "2.4.6"})
    lines, notes = lock_tool.constraints_for(_LOCK, cuda_torch)
    assert lines == ["numpy==2.4.6", "sympy==1.14.0"]
    assert len(notes) == 3 and notes[0].startswith("torch 2.14.1+cu130 is installed")
    assert any(n.startswith("triton 3.8.0, installed for that torch, kept") for n in notes)


def test_constraints_pin_everything_for_the_locked_torch_or_none():
    everything = sorted(f"{name}=={version}" for name, version in _LOCK.values())
    assert lock_tool.constraints_for(_LOCK, None) == (everything, [])
    assert lock_tool.constraints_for(_LOCK, ("2.13.0+cpu", {"triton": "3.8.0"})) == (everything, [])


def test_installed_torch_reads_this_environment():
    import importlib.metadata

    version, requirements = lock_tool.installed_torch(sys.executable)
    assert version == importlib.metadata.version("torch")  # 2.14.1 for a torch whose __version__ is 2.14.1+cu130
    assert all(isinstance(v, str) for v in requirements.values())

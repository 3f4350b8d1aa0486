"""The lock: exact versions of every package the test suite passed with (a pip constraints file).

    python .ci/lock.py write --python .venv/bin/python [--out .ci/constraints.txt]
        freeze that interpreter's environment (everything but lam_fast and pip) into the lock
    python .ci/lock.py constraints --python .venv/bin/python --out .venv/constraints.txt
        the constraints to install with into that environment: the lock, less the pins that a torch
        already installed there owns (see below)

`make install` (so `make demo`, `make test` and `.ci/run`) installs with `pip install -c` of the
second; `make lock` runs the first; `make test-latest` installs without any lock into its own venv.

A GPU user brings their own torch into the venv before `make install`. The lock holds the CPU
build the suite passed with here (``torch==2.13.0+cpu``), and pinning it would make pip replace the
user's CUDA build. So when the environment already has a torch that is not the locked one, the
constraints drop the torch pin and the pin of every requirement of that torch installed there at
another version than the lock's (its triton, its CUDA runtime libraries, say: what pip resolved
for that torch is kept); everything else stays pinned.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

DEFAULT_LOCK = Path(__file__).resolve().parent / "constraints.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")
_NOT_LOCKED = {"lam-fast", "pip"}  # the project itself; pip upgrades itself in a fresh venv


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version). Raises ValueError naming a malformed line."""
    pins: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: not a 'name==version' pin: {raw!r}")
        name, version = match.groups()
        if canonical(name) in pins:
            raise ValueError(f"{path}:{number}: {name} is pinned twice")
        pins[canonical(name)] = (name, version)
    return pins


def _query(python: str, code: str):
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{python} -c ... failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def installed_torch(python: str) -> tuple[str, dict[str, str]] | None:
    """The torch installed for ``python``: (its version, {canonical name: installed version} of each
    of its requirements that is installed), or None."""
    code = ("import importlib.metadata as m, json, re\n"
            "try:\n    d = m.distribution('torch')\n"
            "except m.PackageNotFoundError:\n    print('null'); raise SystemExit\n"
            "deps = {}\n"
            "for req in d.requires or []:\n"
            "    name = re.match(r'\\s*([A-Za-z0-9][A-Za-z0-9._-]*)', req).group(1)\n"
            "    try:\n        deps[name] = m.version(name)\n"
            "    except m.PackageNotFoundError:\n        pass\n"
            "print(json.dumps([d.version, deps]))\n")
    found = _query(python, code)
    return None if found is None else (found[0], {canonical(k): v for k, v in found[1].items()})


def constraints_for(lock: dict[str, tuple[str, str]], torch: tuple[str, dict[str, str]] | None) -> tuple[list[str], list[str]]:
    """(constraint lines, notes on the pins dropped for an installed torch that is not the locked one)."""
    dropped: dict[str, str] = {}
    if torch is not None and "torch" in lock and lock["torch"][1] != torch[0]:
        version, requirements = torch
        dropped["torch"] = f"torch {version} is installed (the lock has {lock['torch'][1]}); kept"
        for name, installed in sorted(requirements.items()):
            if name in lock and lock[name][1] != installed:
                dropped[name] = f"{lock[name][0]} {installed}, installed for that torch, kept (the lock has {lock[name][1]})"
    lines = [f"{name}=={version}" for key, (name, version) in sorted(lock.items()) if key not in dropped]
    return lines, list(dropped.values())


def freeze(python: str) -> list[str]:
    out = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"], capture_output=True,
                         text=True, check=True).stdout
    pins = []
    for line in out.splitlines():
        match = _PIN.match(line.strip())
        if match is None:
            raise ValueError(f"pip freeze gave a line that is not a 'name==version' pin: {line!r} "
                             "(install it from an index, not a path or URL, before locking)")
        if canonical(match.group(1)) not in _NOT_LOCKED:
            pins.append(line.strip())
    return sorted(pins, key=lambda p: canonical(p.split("==")[0]))


def _write(args) -> int:
    pins = freeze(args.python)
    info = _query(args.python, "import json, platform, sys; print(json.dumps([platform.python_version(), sys.platform]))")
    header = [
        "# The lock: exact versions the test suite passed with (a pip constraints file).",
        f"# Written by `make lock` (.ci/lock.py) on {datetime.date.today().isoformat()} from {args.python}: "
        f"Python {info[0]} on {info[1]} ({platform.machine()}).",
        "# make install uses it through .ci/lock.py constraints (a user's own torch is kept: see that script).",
    ]
    args.out.write_text("\n".join(header + pins) + "\n")
    print(f"lock: {len(pins)} pins written to {args.out}")
    return 0


def _constraints(args) -> int:
    lock = read_lock(args.lock)
    lines, notes = constraints_for(lock, installed_torch(args.python))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# from {args.lock} by .ci/lock.py constraints\n" + "\n".join(lines) + "\n")
    for note in notes:
        print(f"lock: not pinned: {note}")
    print(f"lock: {len(lines)} pins -> {args.out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="freeze an environment into the lock")
    w.add_argument("--python", default=sys.executable)
    w.add_argument("--out", type=Path, default=DEFAULT_LOCK)
    c = sub.add_parser("constraints", help="the lock as constraints for an environment (its own torch kept)")
    c.add_argument("--python", default=sys.executable)
    c.add_argument("--lock", type=Path, default=DEFAULT_LOCK)
    c.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    return _write(args) if args.command == "write" else _constraints(args)


if __name__ == "__main__":
    sys.exit(main())

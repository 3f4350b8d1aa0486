"""Packaging: light import, the installed kernels package, the CLI."""

import importlib.util
import json
import os
import subprocess
import sys

import lam_fast


def test_import_is_light():
    code = (
        "import sys, lam_fast, lam_fast.models, lam_fast.training, lam_fast.data, lam_fast.nn\n"
        "heavy = ('triton', 'deepspeed', 'nvidia.dali', 'lam_fast._C', 'transformers', 'av')\n"
        "print([m for m in sys.modules if m.startswith(heavy)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_kernels_ship_inside_the_package(tmp_path):
    # from outside the checkout, only the installed package is importable
    code = (
        "import importlib.util, lam_fast._kernels as k\n"
        "print(k.__name__, importlib.util.find_spec('kernels') is None)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["lam_fast._kernels", "True"]


def test_cli_backends_lists_every_op():
    out = subprocess.run([sys.executable, "-m", "lam_fast.cli", "backends"], capture_output=True, text=True, check=True)
    for op in ("frame_causal_attention", "adaln_modulate", "gated_residual", "vq_lookup"):
        assert f"{op}: auto ->" in out.stdout


def test_version():
    assert isinstance(lam_fast.__version__, str)
    assert json.dumps(lam_fast.__version__)


def test_pyproject_lists_every_package():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "lam_fast").rglob("__init__.py")}
    assert found | {"lam_fast._kernels"} == listed

"""Packaging: light import, the installed kernels package, the CLI."""

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lam_fast


def test_import_is_light():
    code = (
        "import sys, lam_fast, lam_fast.models, lam_fast.training, lam_fast.data, lam_fast.nn\n"
        "heavy = ('triton', 'deepspeed', 'nvidia.dali', 'lam_fast._C', 'transformers', 'av')\n"
        "print([m for m in sys.modules if m.startswith(heavy)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: which `kernels` is imported, and where lam_fast._kernels comes from.
_WHICH_KERNELS = (
    "import importlib.util, kernels, lam_fast._kernels as ours\n"
    "from kernels import CUDAProperties, LayerRepository\n"  # what transformers imports from the hub package
    "assert importlib.util.find_spec('kernels').origin == kernels.__file__, importlib.util.find_spec('kernels')\n"
    "print(kernels.__file__)\n"
    "print(ours.__file__)\n"
)


@functools.cache
def _installed_hub_kernels() -> Path:
    """The Hugging Face `kernels` package's folder (in site-packages), found without the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import importlib.util; print(importlib.util.find_spec('kernels').origin)"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, check=True)
    origin = Path(out.stdout.strip()).parent
    assert ROOT / "kernels" not in [origin, *origin.parents] and "site-packages" in origin.parts, origin
    return origin


def _assert_hub_kernels_and_ours(stdout: str) -> None:
    hub, ours = (Path(line) for line in stdout.split())
    assert hub.parent == _installed_hub_kernels(), f"`import kernels` gave {hub}, not the Hugging Face package"
    assert ours == ROOT / "kernels" / "lam_fast_kernels" / "__init__.py"


@pytest.mark.parametrize("how", ["checkout-cwd", "checkout-pythonpath", "outside"])
def test_import_kernels_is_never_our_folder(how, tmp_path):
    """`python -c` in the checkout (sys.path[0] = ''), the checkout on PYTHONPATH (perf/gpu_check.sh) and
    a plain run elsewhere all import the hub's `kernels`; ours stays lam_fast._kernels."""
    pytest.importorskip("kernels")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cwd = ROOT if how == "checkout-cwd" else tmp_path
    if how == "checkout-pythonpath":
        env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", _WHICH_KERNELS], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    _assert_hub_kernels_and_ours(out.stdout)


def test_python_m_pytest_in_the_checkout_imports_hub_kernels(tmp_path):
    """`python -m pytest` from the checkout puts the checkout first on sys.path."""
    pytest.importorskip("kernels")
    probe = tmp_path / "test_probe.py"
    probe.write_text(f"def test_probe():\n    exec({_WHICH_KERNELS!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(probe)], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    _assert_hub_kernels_and_ours("\n".join(line for line in out.stdout.splitlines() if line.startswith("/")))


def test_transformers_vjepa2_builds_from_the_checkout():
    """The regression of issue 11: transformers imports the hub's `kernels` while building V-JEPA 2."""
    pytest.importorskip("kernels")
    pytest.importorskip("transformers")
    code = (
        "import transformers.integrations.hub_kernels, lam_fast, transformers\n"
        "cfg = transformers.VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8,\n"
        "    crop_size=32, tubelet_size=2, frames_per_clip=4, pred_hidden_size=16, pred_num_hidden_layers=1,\n"
        "    pred_num_attention_heads=2, pred_num_mask_tokens=2, num_pooler_layers=1)\n"
        "transformers.VJEPA2Model(cfg)\n"
        "import kernels; print(kernels.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.split()[-1]).parent == _installed_hub_kernels()


def test_without_the_hub_package_our_kernels_stay_out_of_kernels():
    """With no other `kernels` on sys.path (-S: no site-packages), the checkout's kernels/ folder is
    at most an empty namespace: no code of ours runs or is reachable under the name `kernels`."""
    code = ("import kernels\n"
            "assert getattr(kernels, '__file__', None) is None and not hasattr(kernels, 'attention_fwd')\n"
            "import kernels.lam_fast_kernels\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImportError: lam_fast's Triton kernels are the package lam_fast._kernels, not 'kernels.lam_fast_kernels'" in (
        out.stderr), out.stderr


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

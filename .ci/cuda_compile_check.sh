#!/usr/bin/env bash
# Compile-check the CUDA kernels (csrc/cuda/*.cu) on a machine without a GPU.
#
# The project venv holds the CPU torch, which a CUDAExtension cannot link against, so this builds
# lam_fast._C out of tree with a CUDA build of torch in a separate venv, then imports it and checks
# that every lam_fast op has a CPU and a CUDA kernel registered. Kernels are not run (no GPU).
#
# Environment (all optional):
#   LAM_FAST_CUDA_VENV   venv for the CUDA torch          (default /tmp/lam_fast-cuda-venv, reused)
#   LAM_FAST_CUDA_BUILD  scratch build directory           (default /tmp/lam_fast-cuda-build, wiped)
#   LAM_FAST_CUDA_TORCH  torch requirement                 (default torch==2.14.1, a CUDA 13 build)
#   CUDA_HOME            toolkit root (default: the real root behind `nvcc`, even if nvcc is a wrapper)
#   TORCH_CUDA_ARCH_LIST (default 9.0: there is no GPU to detect an arch from)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LAM_FAST_CUDA_VENV:-/tmp/lam_fast-cuda-venv}"
out="${LAM_FAST_CUDA_BUILD:-/tmp/lam_fast-cuda-build}"

if ! command -v nvcc >/dev/null 2>&1 && [ -z "${CUDA_HOME:-}" ]; then
  echo "cuda-check: skipped, no nvcc on this machine (the CUDA sources were not compiled)"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "${LAM_FAST_CUDA_TORCH:-torch==2.14.1}"
# the build tools at the lock's versions; the lock's CPU torch and the pins it owns give way to this torch
"$venv/bin/python" "$root/.ci/lock.py" constraints --python "$venv/bin/python" --out "$venv/constraints.txt"
"$venv/bin/pip" install -q -c "$venv/constraints.txt" numpy setuptools wheel ninja

if [ -z "${CUDA_HOME:-}" ]; then
  nvcc="$(readlink -f "$(command -v nvcc)")"
  # A wrapper script that execs the real nvcc: the auto-detected root would fail at link time
  # (cannot find -lcudart), so follow it to the real toolkit.
  if [ "$(head -c 2 "$nvcc")" = "#!" ]; then
    nvcc="$(grep -oE '/[^ "]+/bin/nvcc' "$nvcc" | head -n 1)"
  fi
  CUDA_HOME="$(dirname "$(dirname "$nvcc")")"
fi
export CUDA_HOME
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export LAM_FAST_BUILD_CUDA=1
echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"

rm -rf "$out"
mkdir -p "$out"
(cd "$root" && "$venv/bin/python" setup.py -q build_ext --build-lib "$out/lib" --build-temp "$out/temp")

cd "$out"  # not the repo: import the freshly built module, not the checkout's
PYTHONPATH="$out/lib" "$venv/bin/python" - <<'PY'
import torch

import lam_fast._C

ops = ["adaln_modulate_fwd", "adaln_modulate_bwd", "gated_residual_fwd", "gated_residual_bwd", "vq_nearest"]
for op in ops:
    for key in ("CPU", "CUDA"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"lam_fast::{op}", key):
            raise SystemExit(f"lam_fast::{op} has no {key} kernel")
print(f"CUDA build OK: {lam_fast._C.__file__} (torch {torch.__version__}, CUDA {torch.version.cuda}); "
      f"CPU and CUDA kernels registered for {', '.join(ops)}")
PY

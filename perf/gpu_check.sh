#!/usr/bin/env bash
# GPU acceptance check of the fused kernels: build, GPU tests, floors, perf cases, targets.
#
# Run it on a lent GPU machine (an H100, 16 CPU cores, no network; this repository copied to it,
# torch with CUDA preinstalled; nothing is downloaded or installed from a registry):
#
#     OUT=/some/dir bash perf/gpu_check.sh          # about 5-8 minutes; never more than the budget
#
# and read $OUT/summary.txt. Dry run on a machine without a GPU (no build, device cpu, the tiny
# case set, the kernel tests only collected), to check the script itself:
#
#     GPU_CHECK_DRY_RUN=1 OUT=/tmp/gpu_check bash perf/gpu_check.sh
#
# Steps, each under `timeout` with the smaller of its own cap and what is left of the budget (a
# failed, timed-out or skipped step is recorded in steps.tsv and the next step still runs):
#   env           python / torch / CUDA / GPU, nvidia-smi, pip list
#   build         lam_fast._C with its CUDA kernels, in place: LAM_FAST_BUILD_CUDA=1
#                 `python setup.py build_ext --inplace` (TORCH_CUDA_ARCH_LIST = the GPU's, ninja with
#                 MAX_JOBS = all cores); if that fails, `pip install --no-build-isolation --no-deps
#                 --no-index -e .`. The checkout is used through PYTHONPATH; a sitecustomize shim maps
#                 lam_fast._kernels to kernels/ (pyproject's package-dir) when nothing installed does.
#   build-check   lam_fast:: ops with CPU / CUDA kernels, backend_status of every op on cuda
#   tests-gpu     pytest -m gpu (the GPU-marked tests, e.g. the opcheck of the CUDA kernels)
#   floors        copy bandwidth (1 GiB device-to-device copy_) and matmul rates (8192^3 torch.mm,
#                 bf16 / fp16 / fp32) -> floors.json
#   perf-attention, perf-adaln, perf-vq
#                 perf/run.py --set gpu --device cuda --keep-going, one op each (attention at the
#                 ViT-L predictor shape B=8 H=16 8x256 D=64 bf16 against SDPA with the dense mask,
#                 compiled FlexAttention with the same block mask, flash-attn / xformers where
#                 installed; AdaLN-zero B=8 8x256 C=1024 bf16 against torch.compile of the reference;
#                 VQ M=16384 K=32768 D=128 against cdist + argmin); peak memory measured per call
#   tests-kernels pytest tests/ops -k "triton or cuda or op_contracts" (the Triton / CUDA op tests,
#                 on CUDA: TRITON_INTERPRET is unset), with what is left of the budget
#   summary       perf/summary.py: the targets (attention >= 1.3x compiled FlexAttention and >= 55%
#                 of the bf16 matmul rate; AdaLN-zero >= 85% of the copy bandwidth and >= 1.2x
#                 torch.compile of the reference; VQ >= 5x cdist + argmin at K=32768), the memory
#                 check (no O((T*N)^2) / O(M*K) working set), failures; perf/compare.py against
#                 perf/baselines/<device class>.json when one is stored
#
# Writes under $OUT: gpu_check.log (the whole console), steps.tsv (step, status, exit code,
# seconds, timeout), env.txt, nvidia-smi.txt, pip-list.txt, build.log, build-check.log,
# tests-gpu.log + pytest-gpu.xml, floors.json, perf-{attention,adaln,vq}.json + .log (each JSON
# is rewritten after every mode of every case, so a timeout keeps what finished), perf-gpu.json
# (the three merged: the file to store as perf/baselines/h100.json), tests-kernels.log +
# pytest-kernels.xml, summary.txt + summary.json, compare.log.
#
# Environment (all optional but OUT):
#   OUT                  output directory (created)
#   PYTHON               interpreter (default: .venv/bin/python, python3 or python: the first that imports torch)
#   GPU_CHECK_BUDGET_S   total seconds for all steps (default 450: under 8 minutes with start-up)
#   GPU_CHECK_SET        perf case set (default gpu; model-gpu times every predictor preset, slower)
#   GPU_CHECK_DRY_RUN=1  CPU rehearsal described above
#   GPU_CHECK_ONLY       space-separated step names to run, the others recorded as skipped (e.g.
#                        "build build-check tests-kernels" to rerun the kernel tests in a short lease)
#   GPU_CHECK_KERNEL_TESTS  pytest arguments replacing the tests-kernels selection (e.g. one file)
#   TORCH_CUDA_ARCH_LIST, MAX_JOBS, CUDA_HOME   build overrides
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${OUT:?set OUT to the output directory}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
DRY="${GPU_CHECK_DRY_RUN:-0}"
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
RESERVE=25  # kept back for the summary
START=$SECONDS
STEPS="$OUT/steps.tsv"
printf "step\tstatus\trc\tseconds\ttimeout_s\n" >"$STEPS"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

log() { printf '[gpu_check %4ds] %s\n' "$((SECONDS - START))" "$*"; }

# run_step NAME CAP_S CMD...: run CMD with stdout+stderr in $OUT/NAME.log under timeout
# min(CAP_S, budget left - RESERVE); record the outcome; return CMD's exit code.
run_step() {
  local name=$1 cap=$2
  shift 2
  if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ " $GPU_CHECK_ONLY " != *" $name "* ]]; then
    log "$name: SKIPPED (not in GPU_CHECK_ONLY)"
    printf "%s\tskipped-only\t-\t0\t-\n" "$name" >>"$STEPS"
    return 98
  fi
  local left=$((BUDGET - (SECONDS - START) - RESERVE))
  local t=$((cap < left ? cap : left))
  if ((t < 10)); then
    log "$name: SKIPPED (budget: ${left}s left)"
    printf "%s\tskipped-budget\t-\t0\t%s\n" "$name" "$t" >>"$STEPS"
    return 99
  fi
  local cmd="$*"
  cmd="${cmd//$'\n'/ }"
  log "$name (timeout ${t}s): ${cmd:0:160}$([ ${#cmd} -gt 160 ] && echo ' ...')"
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$t" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  local dt=$((SECONDS - t0)) status=ok
  if ((rc == 124 || rc == 137)); then
    status=timeout
  elif [ -n "${OK_RC:-}" ] && ((rc == OK_RC)); then
    status="ok-rc$rc"
  elif ((rc != 0)); then
    status=failed
  fi
  printf "%s\t%s\t%s\t%s\t%s\n" "$name" "$status" "$rc" "$dt" "$t" >>"$STEPS"
  tail -n 15 "$OUT/$name.log" | sed "s/^/    $name| /"
  log "$name: $status (exit $rc, ${dt}s)"
  return $rc
}

note_step() {  # NAME STATUS: a step that did not run a command
  printf "%s\t%s\t-\t0\t-\n" "$1" "$2" >>"$STEPS"
  log "$1: $2"
}

# ------------------------------------------------------------------ interpreter
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in "$root/.venv/bin/python" python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch" >/dev/null 2>&1; then
      PY="$cand"
      break
    fi
  done
fi
if [ -z "$PY" ] || ! "$PY" -c "import torch" >/dev/null 2>&1; then
  log "no python that imports torch (tried \$PYTHON, .venv/bin/python, python3, python); nothing can run"
  note_step env "failed: no torch"
  exit 1
fi
PY="$(command -v "$PY")"

# The checkout, not an installed copy; lam_fast._kernels lives in kernels/lam_fast_kernels/ (pyproject package-dir),
# which only an install maps: a sitecustomize finder maps it otherwise (appended, so an installed
# mapping wins).
shim="$OUT/.pyshim"
mkdir -p "$shim"
cat >"$shim/sitecustomize.py" <<PYEOF
# Written by perf/gpu_check.sh: lam_fast._kernels -> $root/kernels/lam_fast_kernels for an uninstalled checkout.
import importlib.abc
import importlib.util
import sys


class _KernelsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "lam_fast._kernels":
            return None
        return importlib.util.spec_from_file_location(
            fullname, "$root/kernels/lam_fast_kernels/__init__.py",
            submodule_search_locations=["$root/kernels/lam_fast_kernels"])


sys.meta_path.append(_KernelsFinder())
PYEOF
export PYTHONPATH="$shim:$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if [ "$DRY" = "1" ]; then
  DEVICE=cpu
  SET=tiny
  log "DRY RUN: device cpu, set tiny, no build, kernel tests collected only; python $PY"
else
  DEVICE=cuda
  SET="${GPU_CHECK_SET:-gpu}"
  unset TRITON_INTERPRET  # the Triton kernels must run on the GPU, not in the interpreter
  log "python $PY, set $SET, budget ${BUDGET}s"
fi

# ------------------------------------------------------------------ env
env_py='
import importlib.util, os, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cuda available", torch.cuda.is_available(), "cpus", os.cpu_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, "capability %d.%d" % (p.major, p.minor), "memory %.1f GiB" % (p.total_memory / 2**30),
          "SMs", p.multi_processor_count)
for mod in ("triton", "flash_attn", "xformers", "pytest", "hypothesis", "ninja", "setuptools", "numpy"):
    spec = importlib.util.find_spec(mod)
    if spec is None:
        print(mod, "-")
    else:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
'
run_step env 60 "$PY" -c "$env_py"
cp "$OUT/env.log" "$OUT/env.txt" 2>/dev/null || true
(timeout 20 nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi unavailable" >>"$OUT/nvidia-smi.txt") || true
(timeout 30 "$PY" -m pip list >"$OUT/pip-list.txt" 2>&1) || true
if [ "$DRY" != "1" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "torch sees no CUDA device: the GPU steps cannot run"
  note_step gpu "failed: torch.cuda.is_available() is False"
  exit 1
fi

# ------------------------------------------------------------------ build
if [ "$DRY" = "1" ]; then
  note_step build "dry-run: not built (would run: LAM_FAST_BUILD_CUDA=1 $PY setup.py build_ext --inplace)"
else
  arch="$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}"
  export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  if [ -z "${CUDA_HOME:-}" ]; then
    if command -v nvcc >/dev/null 2>&1; then
      nvcc_path="$(readlink -f "$(command -v nvcc)")"
      if [ "$(head -c 2 "$nvcc_path")" = "#!" ]; then  # a wrapper: follow it to the real toolkit
        nvcc_path="$(grep -oE '/[^ "]+/bin/nvcc' "$nvcc_path" | head -n 1)"
      fi
      CUDA_HOME="$(dirname "$(dirname "$nvcc_path")")"
    else
      CUDA_HOME="$("$PY" -c "from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or '')" 2>/dev/null)"
    fi
  fi
  if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
    export CUDA_HOME
    export LAM_FAST_BUILD_CUDA=1
    log "building with CUDA: CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  else
    export LAM_FAST_BUILD_CUDA=0
    log "no nvcc found (CUDA_HOME='${CUDA_HOME:-}'): building the CPU kernels only; the cuda backends will be unavailable"
  fi
  if ! run_step build 240 "$PY" setup.py build_ext --inplace; then
    run_step build-pip 200 "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . || true
  fi
fi

check_py='
import torch
import lam_fast._C
from lam_fast.ops import backend_status
from lam_fast.ops._dispatch import OPS
import lam_fast._kernels
device = "cuda" if torch.cuda.is_available() else "cpu"
names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("lam_fast::"))
for n in names:
    keys = [k for k in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(n, k)]
    print(f"{n}: kernels for {keys}")
for op in sorted(OPS):
    for backend, why in backend_status(op, device).items():
        print(f"{op}[{backend}] on {device}:", why or "usable")
'
run_step build-check 60 "$PY" -c "$check_py"

# ------------------------------------------------------------------ tests
have_pytest=1
if ! "$PY" -c "import pytest, hypothesis" >/dev/null 2>&1; then
  have_pytest=0
  note_step tests-gpu "skipped: pytest or hypothesis not installed for $PY (no network to install them)"
fi
# --continue-on-collection-errors: a test module whose optional import is missing on the GPU
# machine (no network to install it) must not stop the other tests
pytest_common=(-q -rfEs -p no:cacheprovider --continue-on-collection-errors)
if ((have_pytest)); then
  # exit 5: no test collected (none is marked gpu): recorded as ok-rc5
  OK_RC=5 run_step tests-gpu 90 "$PY" -m pytest "${pytest_common[@]}" -m gpu tests --junitxml="$OUT/pytest-gpu.xml"
fi

# ------------------------------------------------------------------ floors + perf
run_step floors 60 "$PY" perf/run.py --floors-only --device "$DEVICE" --json "$OUT/floors.json"
perf_common=(--set "$SET" --device "$DEVICE" --keep-going --warmup 3 --min-time 0.5)
run_step perf-attention 180 "$PY" perf/run.py "${perf_common[@]}" --ops frame_causal_attention \
  --json "$OUT/perf-attention.json"
run_step perf-adaln 120 "$PY" perf/run.py "${perf_common[@]}" --ops adaln_zero --compile adaln_zero \
  --json "$OUT/perf-adaln.json"
run_step perf-vq 90 "$PY" perf/run.py "${perf_common[@]}" --ops vq_lookup --json "$OUT/perf-vq.json"

# ------------------------------------------------------------------ the Triton / CUDA op tests
if ((have_pytest)); then
  kernel_sel=(tests/ops -m "not slow and not gpu" -k "triton or cuda or op_contracts")
  if [ -n "${GPU_CHECK_KERNEL_TESTS:-}" ]; then
    read -r -a kernel_sel <<<"$GPU_CHECK_KERNEL_TESTS"
  fi
  if [ "$DRY" = "1" ]; then
    run_step tests-kernels 60 "$PY" -m pytest "${pytest_common[@]}" --collect-only "${kernel_sel[@]}"
  else
    # -v: each test's name and outcome as it ends, so a step cut short by its timeout still names a failure
    run_step tests-kernels 180 "$PY" -m pytest "${pytest_common[@]}" -v "${kernel_sel[@]}" \
      --junitxml="$OUT/pytest-kernels.xml"
  fi
fi

# ------------------------------------------------------------------ summary
RESERVE=0
perf_files=()
for f in "$OUT"/perf-attention.json "$OUT"/perf-adaln.json "$OUT"/perf-vq.json; do
  [ -f "$f" ] && perf_files+=("$f")
done
if ((${#perf_files[@]})); then
  run_step summary 30 "$PY" perf/summary.py "${perf_files[@]}" "$OUT/floors.json" --json "$OUT/summary.json" \
    --merge "$OUT/perf-gpu.json"
  cp "$OUT/summary.log" "$OUT/summary.txt"
  cls="$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['device_class'])" "$OUT/perf-gpu.json" 2>/dev/null)"
  if [ -n "$cls" ] && [ -f "perf/baselines/$cls.json" ]; then
    run_step compare 20 "$PY" perf/compare.py "$OUT/perf-gpu.json" "perf/baselines/$cls.json" --tolerance 0.15
  else
    note_step compare "no stored baseline perf/baselines/${cls:-?}.json (store one: cp \$OUT/perf-gpu.json perf/baselines/${cls:-h100}.json)"
  fi
else
  note_step summary "no perf results to summarise"
fi

log "done in $((SECONDS - START))s; steps:"
column -t -s $'\t' "$STEPS" 2>/dev/null || cat "$STEPS"
if [ -f "$OUT/summary.txt" ]; then
  echo
  cat "$OUT/summary.txt"
fi
# Exit 0 when every step that ran succeeded (skipped steps allowed; the targets are reported, not enforced).
awk -F'\t' 'NR > 1 && ($2 == "failed" || $2 == "timeout") {bad = 1} END {exit bad}' "$STEPS"

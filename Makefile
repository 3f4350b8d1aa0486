# lam_fast: `make demo` (the main job) and `make test` work on a fresh machine from nothing.
# Installs are pinned by the lock .ci/constraints.txt (every package at the version the suite passed
# with; `make lock` rewrites it, `make test-latest` checks the newest releases in their own venv).
# A GPU user brings their own torch into .venv first: the lock then keeps it (.ci/lock.py says how);
# otherwise the locked CPU build torch==2.13.0+cpu is installed.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.lam_fast-installed
# The lock; empty (LOCK=) installs the newest releases (make test-latest).
LOCK ?= .ci/constraints.txt
# torch when the lock is off: a bare `torch` would resolve to a multi-GB CUDA build.
TORCH_UNLOCKED ?= torch==2.13.0
LATEST_VENV ?= .venv-latest
LOCK_FROM ?= $(VENV)
SAMPLES ?= data/samples
DEMO_OUT ?= runs/demo
DEMO_STEPS ?= 200
PYTEST_ARGS ?=
# Ratio noise on a shared 2-core CPU: repeated runs moved single ratios by up to ~40%, so only
# regressions beyond 1.5x are flagged there; use a lower value on a quiet or GPU machine.
PERF_TOLERANCE ?= 0.5

.PHONY: install lock test-latest demo test test-slow cuda-check bench-decode bench-planning perf gpu-check repro clean

$(PY):
	python3 -m venv $(VENV)

ifeq ($(strip $(LOCK)),)
# Everything upgraded to its newest release but torch, held at TORCH_UNLOCKED by a one-line
# constraint (an eager upgrade would otherwise pull the newest, CUDA, torch).
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h) | $(PY)
	echo "$(TORCH_UNLOCKED)" > $(VENV)/torch-constraint.txt
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -c $(VENV)/torch-constraint.txt torch
	$(PIP) install --upgrade "setuptools>=77" wheel ninja
	$(PIP) install --upgrade --upgrade-strategy eager -c $(VENV)/torch-constraint.txt --no-build-isolation -e ".[perf]"
	touch $(STAMP)
else
# The lock's torch unless the venv has one; then the constraints: the lock less a user torch's pins.
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h) $(LOCK) .ci/lock.py | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -c $(LOCK) torch
	$(PY) .ci/lock.py constraints --python $(PY) --lock $(LOCK) --out $(VENV)/constraints.txt
	$(PIP) install -c $(VENV)/constraints.txt setuptools wheel ninja
	$(PIP) install -c $(VENV)/constraints.txt --no-build-isolation -e ".[perf]"
	touch $(STAMP)
endif

install: $(STAMP)

# Rewrite the lock from the environment the suite just passed in (LOCK_FROM, default .venv; after
# `make test-latest`, LOCK_FROM=$(LATEST_VENV) takes the newest releases).
lock:
	python3 .ci/lock.py write --python $(LOCK_FROM)/bin/python --out .ci/constraints.txt

# Drift check: the newest releases of every dependency (torch stays the CPU build), in their own venv.
test-latest:
	$(MAKE) test VENV=$(LATEST_VENV) LOCK=

# Fetch the real sample clips, train a tiny sparse model on the CPU under the DeepSpeed launcher,
# print the summary (loss start/end, checkpoint), then run the leakage and transfer protocols on the
# real clips and write $(DEMO_OUT)/report.md. TORCHDYNAMO_DISABLE: on a CPU, DeepSpeed's Muon
# would spend ~50 s torch.compile-ing its Newton-Schulz step for a model this small.
demo: install
	$(PY) -m lam_fast.cli fetch-samples --out $(SAMPLES)
	rm -rf $(DEMO_OUT)
	TORCHDYNAMO_DISABLE=1 $(VENV)/bin/deepspeed train/run.py --reg sparse --preset tiny --data $(SAMPLES) \
		--steps $(DEMO_STEPS) --batch-size 4 --out $(DEMO_OUT) --save-every 100 --log-every 10
	@$(PY) -c "import json; r=[json.loads(l) for l in open('$(DEMO_OUT)/metrics.jsonl')]; \
	print(f'demo: loss {r[0][\"loss\"]:.4f} -> {r[-1][\"loss\"]:.4f}, prediction error vs. copying the last state ' \
	f'{r[0][\"pred/rel_to_copy\"]:.3f} -> {r[-1][\"pred/rel_to_copy\"]:.3f}, skipped files {r[-1][\"data/skipped\"]}'); \
	print('demo: checkpoint', open('$(DEMO_OUT)/checkpoints/latest').read().strip(), 'in $(DEMO_OUT)/checkpoints')"
	$(PY) -m lam_fast.cli eval leakage --ckpt $(DEMO_OUT) --data $(SAMPLES) --json $(DEMO_OUT)/eval/leakage.json
	$(PY) -m lam_fast.cli eval transfer --ckpt $(DEMO_OUT) --data $(SAMPLES) --json $(DEMO_OUT)/eval/transfer.json
	$(PY) -m lam_fast.cli report $(DEMO_OUT)

# The small reproduction sweep of README "Results": Table 1/2-shaped tables on the real sample clips
# (6 latent models + the deterministic baseline) and planning on both MuJoCo tasks; resumable.
REPRO_OUT ?= runs/repro
repro: install
	$(PY) train/repro_sweep.py --out $(REPRO_OUT) --stages planning --batch-size 8 --sim-steps 800
	$(PY) train/repro_sweep.py --out $(REPRO_OUT) --stages tables --steps 150

test: install
	$(PY) -m pytest -m "not slow and not gpu" -q $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m "slow" -q $(PYTEST_ARGS)

# Compile csrc/cuda/*.cu with torch==2.14.1 (CUDA 13.0) in its own venv; see the script's header.
cuda-check:
	bash .ci/cuda_compile_check.sh

# Decoders and the input pipeline vs a plain per-clip PyAV loop and decord (the strongest public
# CPU baseline), 16-frame 256x256 clips of the sample clips; writes perf/results/decode.json
# (committed runs: perf/baselines/decode_cpu-intel-amx-2c.json, decode_cpu-amd-avx512bf16-2c.json).
bench-decode: install
	$(PY) perf/bench_decode.py --json perf/results/decode.json

# One CEM plan (the paper's 300 samples x 15 iterations, H = 3) on the tiny preset: the KV-cached,
# shared-prefix rollout against recomputing every prefix; writes perf/results/planning.json
# (perf/baselines/planning_cpu-intel-amx-2c.json: a committed run).
bench-planning: install
	$(PY) perf/bench_planning.py --json perf/results/planning.json

# Kernel perf regression suite: the quick CPU case set (attention, AdaLN, VQ, fp32 and bf16; every
# usable backend against SDPA, FlexAttention and the reference, eager and torch.compile'd, and
# cdist+argmin, all in the same run), then our kernels' ratios against the stored run of this
# machine's class, perf/baselines/<device_class>.json (cpu-intel-amx-2c, cpu-amd-avx512bf16-2c, ...;
# store one for a new class with `cp perf/results/quick-cpu.json perf/baselines/<class>.json`).
# Fails on a regressed ratio of our kernels; with no baseline of this class it lists the ratios only.
perf: install
	$(PY) perf/run.py --set quick --compile
	$(PY) perf/summary.py perf/results/quick-cpu.json
	$(PY) perf/compare.py perf/results/quick-cpu.json perf/baselines --tolerance $(PERF_TOLERANCE)

# On a lent GPU machine (no network): build the CUDA extension, run the GPU tests and the GPU perf
# cases with the copy-bandwidth and bf16-matmul floors, all under $(GPU_CHECK_OUT); see the script's
# header. No `install` dependency on purpose: the GPU machine brings its own CUDA torch.
GPU_CHECK_OUT ?= perf/results/gpu_check
gpu-check:
	OUT=$(GPU_CHECK_OUT) bash perf/gpu_check.sh

clean:
	rm -rf build *.egg-info lam_fast/*.so runs $(STAMP)

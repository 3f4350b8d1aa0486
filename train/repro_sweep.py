"""Reproduction sweep: the paper's tables (PAPER.md sections 2 and 5) at toy scale, on the CPU.

    python train/repro_sweep.py --out runs/repro --steps 300 --data data/samples
    python train/repro_sweep.py --out runs/repro --skip-train              # only re-evaluate
    python train/repro_sweep.py --out runs/repro --stages planning         # one stage
    python train/repro_sweep.py --out runs/repro --dry-run                 # print the commands

Every step is a ``python -m lam_fast.cli ...`` subprocess (the same as ``lam-fast ...``); a failing
command stops the sweep with a message naming it. All commands are appended to ``OUT/commands.log``.

Stage ``tables`` (real camera clips: ``lam-fast fetch-samples --out DATA`` when DATA does not exist):
  trains, with the tiny preset and the pixels encoder, sparse at two lambda_l1 (0.2 = low capacity,
  0.02 = high), noisy at two beta (1e-2 low, 1e-4 high), discrete at two codebook sizes (8 low, 256
  high) and the deterministic baseline, into ``OUT/<reg>_<low|high>`` and ``OUT/deterministic``;
  then ``eval leakage`` and ``eval transfer`` on every latent run (``RUN/eval/{leakage,transfer}.json``
  and ``.png``) and ``eval capacity`` over all of them (``OUT/deterministic/eval/capacity.json``).
Stage ``planning`` (simulated, action-labelled data), for task in reacher, nav:
  ``lam-fast sim generate --task T --episodes 48 --frames 16 --out OUT/sim/T``; a sparse latent model
  on its videos (``--fps 4 --num-frames 8``) in ``OUT/T_sparse``; ``lam-fast train-controller``
  (``OUT/T_sparse/controller``, ``OUT/T_sparse/eval/controller.json``); an action-conditioned model
  ``lam-fast train-action-model --out OUT/T_action``; then ``lam-fast plan`` with the latent model +
  controller, the action model and a random policy (``OUT/T_sparse/eval/plan_{latent,action,random}.json``).

Cost on a 2-core CPU: stage tables with ``--steps 1`` took ~4 min (subprocess start-up, clip
decoding and the evaluations dominate); planning is dominated by ``lam-fast plan``'s CEM (4 reacher
problems took ~3.5 min per planner) and ``train-controller`` (3000 steps by default):
``--plan-problems`` and ``--controller-steps`` pass smaller values (by default they are not passed).

At the end ``OUT/tables.md`` holds Table 1 (leakage) and Table 2 (transfer) shaped like the paper's
(rows sparse / noisy / discrete, columns low / high capacity, cells ``err -> err_cut (xratio)``),
the capacity table, the controller and planning tables (rows latent / action-conditioned / random),
each next to the paper's numbers, and how long each stage took (kept in ``OUT/durations.json``
across invocations); ``OUT/report.md`` / ``.html`` is ``lam-fast report`` over the runs (figures
included). Our errors are mean L1 in the pixels encoder's state space, the paper's are LPIPS of
decoded frames: compare ratios and orderings, not absolute values.

Resumable: a training run whose checkpoint already reached ``--steps`` is skipped, one with an
earlier checkpoint continues (``--resume``); simulated data, controllers and action models are
skipped once built with the same settings (a marker ``OUT/.repro_done/<name>.json`` holding the
command and its key: episodes/frames, the world model's checkpoint step, the steps), else rebuilt.
``--force`` deletes and retrains models, controllers and action models (not the simulated data);
``--skip-train`` trains nothing and fails naming any run that is missing. Evaluations always run
again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: (run name, regulariser, capacity flags, capacity level) of stage ``tables``
TABLE_RUNS: tuple[tuple[str, str, dict, str | None], ...] = (
    ("sparse_low", "sparse", {"lambda-l1": 0.2}, "low"),
    ("sparse_high", "sparse", {"lambda-l1": 0.02}, "high"),
    ("noisy_low", "noisy", {"beta": 1e-2}, "low"),
    ("noisy_high", "noisy", {"beta": 1e-4}, "high"),
    ("discrete_low", "discrete", {"codebook-size": 8}, "low"),
    ("discrete_high", "discrete", {"codebook-size": 256}, "high"),
    ("deterministic", "deterministic", {}, None),
)
LATENT_REGS = ("sparse", "noisy", "discrete")
LEVELS = ("low", "high")
TASKS = ("reacher", "nav")
POLICIES = ("latent", "action", "random")
STAGES = ("tables", "planning")

#: PAPER.md section 5, Table 1 (LPIPS, without cut -> with cut, ratio)
PAPER_LEAKAGE = {
    ("sparse", "low"): (0.28, 0.66, 2.3), ("sparse", "high"): (0.20, 0.50, 2.4),
    ("noisy", "low"): (0.33, 0.69, 2.1), ("noisy", "high"): (0.21, 0.54, 2.5),
    ("discrete", "low"): (0.34, 0.69, 2.0), ("discrete", "high"): (0.29, 0.68, 2.3),
}
#: PAPER.md section 5, Table 2 (Kinetics LPIPS, original -> transferred, ratio)
PAPER_TRANSFER = {
    ("sparse", "low"): (0.26, 0.31, 1.20), ("sparse", "high"): (0.19, 0.24, 1.30),
    ("noisy", "low"): (0.30, 0.34, 1.13), ("noisy", "high"): (0.20, 0.26, 1.34),
    ("discrete", "low"): (0.32, 0.33, 1.03), ("discrete", "high"): (0.27, 0.29, 1.07),
}
#: PAPER.md section 5, planning: reacher ~ DROID (delta xyz, m), nav ~ RECON (ATE / RPE)
PAPER_PLANNING = {
    "reacher": {
        "latent": "DROID Δxyz: sparse low/mid/high 0.33/0.18/0.13, noisy 0.49/0.11/0.10, discrete low/high 0.18/0.14",
        "action": "DROID Δxyz: V-JEPA 2-AC 0.15, best action-labelled world model 0.05",
        "random": "-",
    },
    "nav": {
        "latent": "RECON ATE/RPE: noisy high 1.40/0.40 (best), sparse mid 1.45/0.41, discrete high 1.48/0.42",
        "action": "RECON ATE/RPE: NWM (action-labelled) 1.13/0.35",
        "random": "- (NoMaD policy 1.93/0.52)",
    },
}
PAPER_CONTROLLER = {
    "reacher": "DROID: sparse mid 0.10 -> 0.12, noisy mid 0.10 -> 0.11, discrete high 0.11 -> 0.12",
    "nav": "RECON: sparse mid 0.19 -> 0.23, noisy mid 0.17 -> 0.21",
}
POLICY_LABELS = {"latent": "latent (sparse + controller)", "action": "action-conditioned", "random": "random"}
DONE_MARKER = ".repro_done"


class CommandFailed(SystemExit):
    pass


# ---------------------------------------------------------------------------------------------
# running commands


class Runner:
    """Runs ``python -m lam_fast.cli ...`` subprocesses (or prints them with ``dry_run``)."""

    def __init__(self, out: Path, *, dry_run: bool = False, python: str = sys.executable):
        self.out, self.dry_run, self.python = out, dry_run, python

    def lam(self, *args) -> None:
        self.run([self.python, "-m", "lam_fast.cli", *map(str, args)])

    def run(self, cmd: list[str]) -> None:
        text = shlex.join(cmd)
        print(f"repro_sweep: $ {text}", flush=True)
        if self.dry_run:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "commands.log", "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        env = dict(os.environ)
        env.setdefault("TORCHDYNAMO_DISABLE", "1")  # no torch.compile of the optimiser for tiny CPU models
        try:
            rc = subprocess.run(cmd, env=env).returncode
        except OSError as error:
            raise CommandFailed(f"repro_sweep: could not start the command {text}: {error}") from None
        if rc != 0:
            raise CommandFailed(f"repro_sweep: FAILED (exit status {rc}): {text}")


def checkpoint_step(run: Path) -> int | None:
    """Step of the run's latest complete checkpoint (None when there is none)."""
    root = run / "checkpoints"
    candidates = []
    pointer = root / "latest"
    if pointer.is_file():
        candidates.append(root / pointer.read_text().strip())
    if root.is_dir():
        candidates += sorted((p for p in root.iterdir() if re.fullmatch(r"step_\d+", p.name)),
                             reverse=True)
    for candidate in candidates:
        try:
            return int(json.loads((candidate / "trainer.json").read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def train_run(runner: Runner, args, run: Path, reg: str, data, extra: list, steps: int | None = None) -> None:
    """Train ``run`` to ``steps`` (default ``args.steps``) unless its checkpoint already got there
    (resume if earlier)."""
    steps = args.steps if steps is None else steps
    if args.force and run.exists() and not args.skip_train and not runner.dry_run:
        shutil.rmtree(run)
    step = checkpoint_step(run)
    if step is not None and step >= steps:
        print(f"repro_sweep: {run} has a checkpoint at step {step} >= {steps}: not retrained")
        return
    if args.skip_train:
        if step is None and not runner.dry_run:
            raise SystemExit(f"repro_sweep: --skip-train but {run} has no checkpoint (train it first)")
        print(f"repro_sweep: --skip-train: using {run} at step {step}")
        return
    resume = ["--resume"] if step is not None else []
    encoder = [] if "--encoder" in extra else ["--encoder", "pixels"]
    runner.lam("train", "--reg", reg, "--preset", "tiny", *encoder, "--data", data,
               "--steps", steps, "--batch-size", args.batch_size, "--out", run, "--engine", "local",
               *extra, *resume)


def once(runner: Runner, args, target: Path, *cmd, training: bool = True, key: dict | None = None) -> None:
    """Run a lam-fast command whose output ``target`` is reusable: skipped once it succeeded with
    the same ``key`` (e.g. the checkpoint step of the model it was built on), unless ``--force``
    (``training`` outputs only). The marker (:func:`_marker`) holds the command and the key."""
    marker = _marker(runner.out, target)
    stored = _read(marker) if marker.is_file() else None
    fresh = stored is not None and stored.get("key") == key and target.exists()
    if fresh and not (args.force and training):
        print(f"repro_sweep: {target} done before: skipped")
        return
    if args.skip_train and training:
        if stored is None and not runner.dry_run:
            raise SystemExit(f"repro_sweep: --skip-train but {target} was never built (run without --skip-train)")
        if stored is not None and not fresh:
            print(f"repro_sweep: --skip-train: using {target}, built for {stored.get('key')} (now {key})")
        return
    if target.exists() and not runner.dry_run and (args.force or stored is not None):
        shutil.rmtree(target)  # forced, or built for another key: rebuild from nothing
    runner.lam(*cmd)
    if not runner.dry_run:
        from lam_fast.io import write_json_atomic

        marker.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, {"cmd": shlex.join(map(str, cmd)), "key": key}, indent=None)


def _marker(out: Path, target: Path) -> Path:
    """``OUT/.repro_done/<target relative to OUT, '/' -> '__'>.json``: outside the target, so that
    no dataset or model folder holds a file its readers do not expect."""
    try:
        name = target.resolve().relative_to(out.resolve()).as_posix().replace("/", "__")
    except ValueError:
        name = target.name
    return out / DONE_MARKER / f"{name}.json"


# ---------------------------------------------------------------------------------------------
# stages


def stage_tables(runner: Runner, args) -> None:
    out, data = args.out, args.data
    if not Path(data).exists():
        runner.lam("fetch-samples", "--out", data)
    for name, reg, knobs, _ in TABLE_RUNS:
        extra = [item for flag, value in knobs.items() for item in (f"--{flag}", value)]
        train_run(runner, args, out / name, reg, data, extra)
    common = ["--data", data, "--clips", args.clips, "--seed", args.seed, "--device", args.device]
    latent = [out / name for name, reg, _, _ in TABLE_RUNS if reg != "deterministic"]
    for run in latent:
        for protocol in ("leakage", "transfer"):
            runner.lam("eval", protocol, "--ckpt", run, "--json", run / "eval" / f"{protocol}.json", *common)
    runner.lam("eval", "capacity", "--ckpt", *latent, "--baseline", out / "deterministic",
               "--json", out / "deterministic" / "eval" / "capacity.json", *common)


def stage_planning(runner: Runner, args) -> None:
    out = args.out
    for task in TASKS:
        sim = out / "sim" / task
        once(runner, args, sim, "sim", "generate", "--task", task, "--episodes", args.episodes,
             "--frames", args.frames, "--out", sim, training=False,
             key={"episodes": args.episodes, "frames": args.frames})
        run, action = out / f"{task}_sparse", out / f"{task}_action"
        encoder = ["--encoder", args.sim_encoder] + (["--patch-size", args.sim_patch_size]
                                                     if args.sim_encoder == "pixels" else [])
        train_run(runner, args, run, "sparse", sim, ["--fps", 4, "--num-frames", 8, *encoder], steps=args.sim_steps)
        steps = [] if args.controller_steps is None else ["--steps", args.controller_steps]
        for kind, name in (("cross", "controller"), ("mlp", "controller_mlp")):
            once(runner, args, run / name, "train-controller", "--ckpt", run, "--data", sim, "--kind", kind,
                 "--out", run / name, "--json", run / "eval" / f"{name}.json", *steps,
                 key={"ckpt_step": checkpoint_step(run), "steps": args.controller_steps})
        # the baseline shares the latent model's encoder and predictor preset (--like)
        once(runner, args, action, "train-action-model", "--data", sim, "--out", action, "--like", run,
             "--steps", args.sim_steps, "--num-frames", 8, "--batch-size", args.batch_size,
             key={"steps": args.sim_steps, "ckpt_step": checkpoint_step(run)})
        problems = [] if args.plan_problems is None else ["--problems", args.plan_problems]
        runner.lam("plan", "--ckpt", run, "--controller", run / "controller", "--data", sim,
                   "--json", run / "eval" / "plan_latent.json", *problems)
        runner.lam("plan", "--ckpt", action, "--data", sim, "--json", run / "eval" / "plan_action.json", *problems)
        runner.lam("plan", "--policy", "random", "--data", sim, "--json", run / "eval" / "plan_random.json",
                   *problems)


# ---------------------------------------------------------------------------------------------
# tables


def _read(path: Path):
    """A bookkeeping JSON object of the sweep (a marker, the durations), or None."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _result(path: Path, protocol: str):
    """The result record in ``path`` (``lam_fast.eval.results``) when it is one of ``protocol``;
    None when there is no file. A file that does not read as that kind is reported and left out."""
    from lam_fast.eval.results import read_result

    if not path.is_file():
        return None
    try:
        result = read_result(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        print(f"repro_sweep: skipped {path}: {type(error).__name__}: {error}")
        return None
    if result.protocol != protocol:
        print(f"repro_sweep: skipped {path}: a {result.protocol} result, expected {protocol}")
        return None
    return result


def collect(out: Path) -> dict:
    """The results of both stages found under ``out`` (result records), shaped for :func:`render_tables`."""
    results: dict = {"leakage": {}, "transfer": {}, "capacity": None, "planning": {}, "controller": {}, "knobs": {}}
    for name, reg, knobs, level in TABLE_RUNS:
        if level is None:
            continue
        results["knobs"][(reg, level)] = next(iter(knobs.values()))
        for protocol in ("leakage", "transfer"):
            r = _result(out / name / "eval" / f"{protocol}.json", protocol)
            if r is not None:
                results[protocol].setdefault(reg, {})[level] = r
    results["capacity"] = _result(out / "deterministic" / "eval" / "capacity.json", "capacity")
    for task in TASKS:
        run = out / f"{task}_sparse"
        for policy in POLICIES:
            r = _result(run / "eval" / f"plan_{policy}.json", "plan")
            if r is not None:
                results["planning"].setdefault(task, {})[policy] = r
        for name in ("controller", "controller_mlp"):
            r = _result(run / "eval" / f"{name}.json", "controller")
            if r is not None:
                results["controller"].setdefault(task, {})[r.kind] = r
    return results


def _num(value, spec: str = ".3f") -> str:
    from lam_fast.eval.report import format_number

    return format_number(value, spec)


def _cell(before, after, ratio) -> str:
    if before is None and after is None:
        return "-"
    return f"{_num(before)} -> {_num(after)} (x{_num(ratio, '.2f')})"


def _paper_cell(numbers) -> str:
    before, after, ratio = numbers
    return f"{before:.2f} -> {after:.2f} (x{ratio:.2f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    from lam_fast.eval.report import markdown_table

    return markdown_table(header, rows)


def _protocol_table(results: dict, protocol: str, paper: dict) -> list[str]:
    rows = []
    for reg in LATENT_REGS:
        cells = []
        for level in LEVELS:
            r = results[protocol].get(reg, {}).get(level)
            cells.append("-" if r is None else _cell(r.error_original, r.error_changed_or_transferred, r.ratio))
            cells.append(_paper_cell(paper[(reg, level)]))
        knobs = results.get("knobs", {})
        label = reg
        if (reg, "low") in knobs:
            label += f" ({knobs[(reg, 'low')]:g} / {knobs[(reg, 'high')]:g})"
        rows.append([label, *cells])
    return _table(["latents (knob low / high)", "low capacity (ours)", "low capacity (paper)",
                   "high capacity (ours)", "high capacity (paper)"], rows)


def render_tables(results: dict, durations: dict | None = None, meta: dict | None = None) -> str:
    """Markdown of the sweep's results (see :func:`collect` for the shape); missing results are '-'."""
    meta = meta or {}
    lines = ["# lam_fast reproduction sweep", ""]
    if meta:
        lines += [", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    lines += ["Our errors: mean L1 in the pixels encoder's state space (tiny preset, few steps, real sample clips); "
              "the paper's: LPIPS of decoded frames after full training. Compare ratios and orderings, not values.",
              "", "## Table 1: future leakage (error without cut -> with cut (ratio))", ""]
    lines += _protocol_table(results, "leakage", PAPER_LEAKAGE)
    lines += ["", "A ratio near 1 would mean z carries the next frame; the paper measures 2.0-2.5.", "",
              "## Table 2: transfer (error with own latents -> cycled latents (ratio))", ""]
    lines += _protocol_table(results, "transfer", PAPER_TRANSFER)
    lines += ["", "The paper (Kinetics, 2 s rollouts): 1.03-1.34, higher capacity transfers worse.", "",
              "## Capacity (one-step teacher-forced error with IDM latents)", ""]
    capacity = results.get("capacity")
    if capacity:
        base = capacity.baseline
        rows = [[f"`{base.run}`", "deterministic", "-", "-", _num(base.error, ".4f"), "1"]]
        for r in capacity.runs:
            rows.append([f"`{r.run}`", r.reg, r.capacity_knob or "-", _num(r.knob_value, "g"), _num(r.error, ".4f"),
                         _num(r.rel_to_baseline, ".3f")])
        lines += _table(["run", "regulariser", "knob", "value", "error", "error / baseline"], rows)
        lines += ["", f"{capacity.clips} clips. Larger lambda_l1 or beta = lower capacity, larger "
                  "codebook = higher capacity."]
    else:
        lines += ["(no capacity results yet: run stage tables)"]
    lines += ["", "The paper: sparse and noisy latents reach much higher capacity (lower error) than VQ, which "
              "remains very close to the deterministic baseline.", "", "## Controllers (rollout error: IDM latents -> "
              "controller latents (ratio))", ""]
    rows = []
    for task in TASKS:
        by_kind = results.get("controller", {}).get(task) or {"cross": None}
        for kind, r in sorted(by_kind.items()):
            rows.append([task, kind,
                         "-" if r is None else _cell(r.rollout_error_idm, r.rollout_error_controller, r.ratio),
                         "-" if r is None else _num(r.heldout_r2),
                         PAPER_CONTROLLER[task] if kind == "cross" else "MLP on actions only: collapses to 'no movement'"])
    lines += _table(["task", "controller", "ours", "held-out latent R²", "paper"], rows)
    lines += ["", "## Planning: reacher (Δ actions: mean L1 between summed planned and summed true actions)", ""]
    rows = []
    for policy in POLICIES:
        r = results.get("planning", {}).get("reacher", {}).get(policy)
        rows.append([POLICY_LABELS[policy], "-" if r is None else r.method, "-" if r is None else str(r.episodes),
                     "-" if r is None else _num(r.delta_actions),
                     "-" if r is None else _num(r.end_effector_error), PAPER_PLANNING["reacher"][policy]])
    lines += _table(["policy", "method", "episodes", "Δ actions (ours)", "end-effector error (ours, m)",
                     "paper (DROID Δxyz, m)"], rows)
    lines += ["", "## Planning: nav (ATE / RPE)", ""]
    rows = []
    for policy in POLICIES:
        r = results.get("planning", {}).get("nav", {}).get(policy)
        rows.append([POLICY_LABELS[policy], "-" if r is None else r.method, "-" if r is None else str(r.episodes),
                     "-" if r is None else _num(r.ate), "-" if r is None else _num(r.rpe),
                     PAPER_PLANNING["nav"][policy]])
    lines += _table(["policy", "method", "episodes", "ATE (ours)", "RPE (ours)", "paper (RECON ATE/RPE)"], rows)
    lines += ["", "## Durations", ""]
    durations = durations or {}
    rows = [[stage, f"{durations[stage]['seconds']:.0f} s" if stage in durations else "-",
             str(durations.get(stage, {}).get("finished", "-"))] for stage in STAGES]
    lines += _table(["stage", "wall time", "finished"], rows) + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train/repro_sweep.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/repro"), help="sweep folder (default runs/repro)")
    p.add_argument("--steps", type=int, default=300, help="training steps of every model (default 300)")
    p.add_argument("--data", default="data/samples", help="videos of stage tables (default data/samples; "
                   "fetched with `lam-fast fetch-samples` when missing)")
    p.add_argument("--stages", default="tables,planning", help="comma-separated subset of: " + ", ".join(STAGES))
    p.add_argument("--skip-train", action="store_true", help="train nothing: only re-evaluate existing runs")
    p.add_argument("--force", action="store_true", help="delete and retrain runs, controllers, action models")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--clips", type=int, default=8, help="clips per evaluation")
    p.add_argument("--seed", type=int, default=0, help="evaluation clip seed")
    p.add_argument("--episodes", type=int, default=48, help="planning: simulated episodes per task")
    p.add_argument("--frames", type=int, default=16, help="planning: frames per simulated episode")
    p.add_argument("--sim-steps", type=int, default=400,
                   help="planning: training steps of the latent and the action-conditioned models on sim video")
    p.add_argument("--sim-encoder", default="effnet", choices=("effnet", "pixels"),
                   help="planning: frozen encoder of the sim models (default effnet: at 64 px a 4x4 grid of 112-d "
                        "features; on pixel tokens the reacher's small moving arm gives an L1 loss whose optimum is "
                        "'no change', see README)")
    p.add_argument("--sim-patch-size", type=int, default=16,
                   help="planning, --sim-encoder pixels: patch side (16: 4x4 tokens at 64 px)")
    p.add_argument("--controller-steps", type=int, default=1000,
                   help="planning: train-controller --steps (the paper: 3000)")
    p.add_argument("--plan-problems", type=int, default=16,
                   help="planning: plan --problems (the paper: 64 episodes)")
    p.add_argument("--device", default="cpu", help="evaluation device")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        parser.error(f"--stages: unknown {unknown} (choose from {', '.join(STAGES)})")
    if args.skip_train and args.force:
        parser.error("--skip-train and --force contradict each other")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    runner = Runner(args.out, dry_run=args.dry_run)
    durations_path = args.out / "durations.json"
    durations = _read(durations_path) or {}
    for stage in STAGES:
        if stage not in stages:
            continue
        print(f"repro_sweep: stage {stage}", flush=True)
        start = time.perf_counter()
        {"tables": stage_tables, "planning": stage_planning}[stage](runner, args)
        seconds = time.perf_counter() - start
        print(f"repro_sweep: stage {stage} took {seconds:.0f} s", flush=True)
        if not args.dry_run:
            durations[stage] = {"seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "skip_train": args.skip_train, "steps": args.steps}
            from lam_fast.io import write_json_atomic

            args.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(durations_path, durations, indent=2)
    if args.dry_run:
        return 0
    runs = [args.out / name for name, *_ in TABLE_RUNS] + [args.out / f"{task}_sparse" for task in TASKS]
    runs = [run for run in runs if (run / "metrics.jsonl").is_file()]
    if runs:
        runner.lam("report", *runs, "--out", args.out / "report.md")
    meta = {"steps": args.steps, "data": args.data, "clips": args.clips, "preset": "tiny", "encoder": "pixels"}
    from lam_fast.io import write_text_atomic

    write_text_atomic(args.out / "tables.md", render_tables(collect(args.out), durations, meta))
    print(f"repro_sweep: wrote {args.out / 'tables.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""train/run.py under DeepSpeed on the CPU (gloo): launcher, ranks, ZeRO stages, exact resume.

Runs as subprocesses, like a user would. TORCHDYNAMO_DISABLE=1 keeps DeepSpeed's Muon from
torch.compile-ing its Newton-Schulz step (about 50 s per cold process on 2 CPU cores).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[2]
RUN = str(ROOT / "train" / "run.py")
DEEPSPEED = str(Path(sys.executable).parent / "deepspeed")
SMALL = ["--preset", "tiny", "--image-size", "32", "--num-frames", "4", "--fps", "4", "--batch-size", "2",
         "--log-every", "1", "--codebook-size", "8", "--vq-reset-every", "4"]


def _run(cmd, timeout=600):
    env = dict(os.environ, TORCHDYNAMO_DISABLE="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("reg", ["sparse", "noisy", "discrete"])
def test_deepspeed_launcher_trains_each_regulariser(video_folder, tmp_path, reg):
    out = tmp_path / reg
    _ok(_run([DEEPSPEED, RUN, "--reg", reg, "--data", str(video_folder), "--steps", "3", "--out", str(out), *SMALL]))
    meta = json.loads((out / "checkpoints" / "step_00000003" / "trainer.json").read_text())
    assert meta["engine"] == "deepspeed" and meta["step"] == 3 and meta["world_size"] == 1
    assert sorted(_losses(out)) == [1, 2, 3]


def test_two_ranks_zero2(video_folder, tmp_path):
    out = tmp_path / "run"
    proc = _run([DEEPSPEED, "--num_gpus", "2", RUN, "--reg", "sparse", "--zero-stage", "2", "--data", str(video_folder),
                 "--steps", "3", "--out", str(out), *SMALL])
    _ok(proc)
    ckpt = out / "checkpoints" / "step_00000003"
    meta = json.loads((ckpt / "trainer.json").read_text())
    assert meta["world_size"] == 2 and meta["zero_stage"] == 2
    assert (ckpt / "optimizer_rank0.safetensors").is_file() and (ckpt / "optimizer_rank1.safetensors").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["videos_seen"] for r in records] == [4, 8, 12]  # 2 ranks x batch 2, logged by rank 0 only


@pytest.mark.parametrize("stage, ranks", [(2, 1), (3, 1), (2, 2)])
def test_deepspeed_resume_equals_uninterrupted(video_folder, tmp_path, stage, ranks):
    launcher = [sys.executable] if ranks == 1 else [DEEPSPEED, "--num_gpus", str(ranks)]
    args = [*launcher, RUN, "--engine", "deepspeed", "--zero-stage", str(stage), "--reg", "discrete",
            "--data", str(video_folder), "--steps", "4", "--save-every", "2", "--keep-last", "4", *SMALL]
    full, part = tmp_path / "full", tmp_path / "part"
    _ok(_run([*args, "--out", str(full)]))
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000002", part / "checkpoints" / "step_00000002")
    _ok(_run([*args, "--out", str(part), "--resume"]))
    a, b = _losses(full), _losses(part)
    assert sorted(b) == [3, 4]
    assert [a[3], a[4]] == [b[3], b[4]]


def test_deepspeed_config_file_sets_zero_stage(video_folder, tmp_path):
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps({"zero_optimization": {"stage": 1}, "gradient_clipping": 0.5}))
    out = tmp_path / "run"
    _ok(_run([sys.executable, RUN, "--engine", "deepspeed", "--deepspeed_config", str(cfg), "--reg", "noisy",
              "--data", str(video_folder), "--steps", "2", "--out", str(out), *SMALL]))
    assert json.loads((out / "checkpoints" / "step_00000002" / "trainer.json").read_text())["zero_stage"] == 1


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("reg: sparse\nlearning_rate_typo: 3\n")
    proc = _run([sys.executable, RUN, "--config", str(bad), "--data", "x", "--steps", "1"])
    assert proc.returncode == 2
    assert "learning_rate_typo" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("reg, ranks, stage", [("sparse", 1, 0), ("noisy", 1, 0), ("discrete", 1, 0), ("sparse", 2, 2)])
def test_fifty_steps_under_the_launcher(video_folder, tmp_path, reg, ranks, stage):
    out = tmp_path / "run"
    _ok(_run([DEEPSPEED, "--num_gpus", str(ranks), RUN, "--reg", reg, "--zero-stage", str(stage), "--data",
              str(video_folder), "--steps", "50", "--out", str(out), *SMALL], timeout=1800))
    losses = _losses(out)
    assert (out / "checkpoints" / "step_00000050" / "model.safetensors").is_file()
    assert losses[50] < losses[1]


def test_bf16_under_deepspeed(video_folder, tmp_path):
    out = tmp_path / "run"
    _ok(_run([sys.executable, RUN, "--engine", "deepspeed", "--precision", "bf16", "--reg", "sparse",
              "--data", str(video_folder), "--steps", "2", "--out", str(out), *SMALL]))
    assert all(v == v for v in _losses(out).values())


_GROUPS_SCRIPT = """
import json, sys, torch
from lam_fast.models import LatentActionWorldModel, ModelConfig
from lam_fast.nn import MUON, optimizer_groups
from lam_fast.training.config import make_config
from lam_fast.training.engine import DeepSpeedEngine

cfg = make_config(engine="deepspeed", preset="tiny", reg=sys.argv[1], zero_stage=int(sys.argv[2]), steps=4)
model = LatentActionWorldModel(cfg.model_config(), state_dim=48, grid=(4, 4))
declared = optimizer_groups(model)
names = {id(p): n for n, p in model.named_parameters()}
engine = DeepSpeedEngine(model, cfg, torch.device("cpu"))
if int(sys.argv[2]) == 0:  # the optimizer's own groups hold the parameters
    groups = [(bool(g.get("use_muon")), [names[id(p)] for p in g["params"]]) for g in engine.optimizer.param_groups]
else:  # ZeRO flattens them and picks its Muon parameters by their use_muon tag (stage_1_and_2.py)
    groups = [(bool(p.use_muon), [n]) for n, p in engine.module.named_parameters()]
print(json.dumps({"declared": declared, "groups": groups}))
"""


@pytest.mark.parametrize("stage", [0, 2])
def test_deepspeed_splits_muon_adamw_as_declared(stage):
    """DeepSpeed's initialize re-tags use_muon from parameter names ("embed"): the engine's
    optimizer must hold the groups the modules declared (predictor.cond_embed: Muon)."""
    proc = _run([sys.executable, "-c", _GROUPS_SCRIPT, "sparse", str(stage)])
    _ok(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    declared = result["declared"]
    assert declared["predictor.cond_embed.0.weight"] == "muon"  # the case DeepSpeed's name rule gets wrong
    seen = {}
    for use_muon, names in result["groups"]:
        for name in names:
            seen[name] = "muon" if use_muon else "adamw"
    assert seen == declared

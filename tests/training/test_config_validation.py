"""Every setting validated at config time (issue 13, items 4 and 6): a bad value is a ConfigError
(a UserError: one line and exit 2 on the command line) naming the key and the rule, raised by
make_config and TrainConfig alike, never a traceback from deep inside training; YAML files that are
missing, unreadable, malformed or have a key twice are ConfigErrors naming the file (and line)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lam_fast.errors import UserError
from lam_fast.models.config import PREDICTOR_PRESETS, REGULARIZERS
from lam_fast.models.encoders import ENCODERS, build_encoder, encoder_geometry
from lam_fast.training.config import MAX_LR, ConfigError, TrainConfig, make_config, save_config

ROOT = Path(__file__).resolve().parents[2]

BAD = [
    # the list: capacity knobs, sizes, the image/patch rule
    ("lambda_l1", -1.0), ("beta", -1.0), ("codebook_size", 0), ("patch_size", 0), ("image_size", 7),
    ("lambda_l1", math.inf), ("beta", math.nan),
    # learning rates: non-finite, not positive, absurd (3e38 overflowed float32 inside Muon)
    ("muon_lr", 3e38), ("adamw_lr", 3e38), ("muon_lr", math.nan), ("adamw_lr", math.inf), ("muon_lr", 0.0),
    ("adamw_lr", -1e-3), ("muon_lr", 20.0),
    # the other numbers
    ("steps", 0), ("batch_size", 0), ("num_frames", 1), ("fps", 0.0), ("fps", math.inf), ("save_every", 0),
    ("keep_last", 0), ("log_every", 0), ("num_workers", -1), ("vq_reset_every", 0), ("latent_dim", 0),
    ("warmup_frac", 1.0), ("warmup_frac", -0.1), ("warmup_frac", math.nan), ("grad_clip", 0.0),
    ("grad_clip", -1.0), ("grad_clip", math.nan),
    ("weight_decay", -0.1), ("seed", -1), ("seed", 2**63), ("image_size", 0),
    # choices and paths
    ("backend", "bogus"), ("precision", "fp16"), ("out", ""), ("data", " "),
]


@pytest.mark.parametrize(("key", "value"), BAD)
def test_a_bad_value_is_refused_naming_the_key(key, value):
    for build in (make_config, TrainConfig):
        with pytest.raises(ConfigError, match=f"config key '{key}'") as caught:
            build(**{key: value})
        assert "\n" not in str(caught.value) and "expected" in str(caught.value)
        assert isinstance(caught.value, UserError)


@pytest.mark.parametrize(("settings", "key"), [
    (dict(encoder="effnet", image_size=40), "image_size"),  # stage 4's stride is 16
    (dict(encoder="effnet", image_size=36), "image_size"),
    (dict(encoder="vjepa2", image_size=72), "image_size"),  # the model's patch is 16
    (dict(encoder="vjepa2", num_frames=5), "num_frames"),  # one state per 2-frame tubelet
    (dict(encoder="vjepa2", num_frames=2), "num_frames"),  # one state: no transition to learn
    (dict(patch_size=16, image_size=40), "image_size"),
    (dict(reg="sparse", batch_size=1, num_frames=2), "batch_size"),  # VCM: 1 latent has no variance
    (dict(weight_decay=50.0), "weight_decay"),  # muon_lr 0.02 * 50 = 1: every weight zeroed a step
    (dict(adamw_lr=0.5, weight_decay=2.0), "weight_decay"),
])
def test_rules_between_keys(settings, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        make_config(**settings)


def test_the_limits_themselves_are_accepted():
    cfg = make_config(grad_clip=1e-6, warmup_frac=0.0, num_workers=0, lambda_l1=0.0, beta=0.0, muon_lr=MAX_LR,
                      adamw_lr=1e-12, weight_decay=0.0, codebook_size=1, patch_size=1, image_size=1,
                      num_frames=2, batch_size=2, seed=2**63 - 1)
    assert (cfg.muon_lr, cfg.codebook_size, cfg.seed) == (MAX_LR, 1, 2**63 - 1)
    for reg in ("noisy", "discrete", "unconstrained", "deterministic"):  # VCM is sparse's only
        make_config(reg=reg, batch_size=1, num_frames=2)
    make_config(encoder="vjepa2", num_frames=4, image_size=32)
    make_config(encoder="effnet", image_size=48)


def test_types_are_checked_by_the_dataclass_too():
    for key, value in [("steps", "ten"), ("residual", 1), ("lambda_l1", True), ("batch_size", 2.0),
                       ("out", None), ("reg", 3)]:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            TrainConfig(**{key: value})
    cfg = TrainConfig(steps=np.int64(5), lambda_l1=1, fps=np.float32(2.0))  # numbers of any kind, converted
    assert (type(cfg.steps), type(cfg.lambda_l1), type(cfg.fps)) == (int, float, float)


def test_defaults_and_every_preset_regulariser_and_encoder_validate(tmp_path):
    configs = [make_config(), TrainConfig()]
    configs += [make_config(preset=p, reg=r) for p in PREDICTOR_PRESETS for r in REGULARIZERS]
    configs += [make_config(encoder=e) for e in ENCODERS]
    for cfg in configs:
        assert TrainConfig(**cfg.to_dict()) == cfg
        save_config(cfg, tmp_path / "config.yaml")
        assert make_config(tmp_path / "config.yaml") == cfg


def test_encoder_geometry_is_what_the_encoders_require(tmp_path):
    """TrainConfig validates with encoder_geometry; the encoders, when built, agree with it."""
    assert encoder_geometry("pixels", {"patch_size": 4}) == (4, 1)
    assert build_encoder("pixels", 12, patch_size=4).frames_per_state == 1
    with pytest.raises(ValueError, match="divisible"):
        build_encoder("pixels", 14, patch_size=4)
    assert encoder_geometry("effnet") == (16, 1) and encoder_geometry("vjepa2") == (16, 2)
    assert encoder_geometry("vjepa2", {"model": "someone/another-model"}) is None  # known once loaded
    transformers = pytest.importorskip("transformers")
    config = transformers.VJEPA2Config(crop_size=24, patch_size=8, tubelet_size=2, hidden_size=32,
                                       num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0)
    encoder = build_encoder("vjepa2", 24, config=config)
    assert encoder_geometry("vjepa2", {"config": config}) == (8, encoder.frames_per_state) == (8, 2)
    with pytest.raises(ValueError, match="video.* multiple|frames_per_state"):
        encoder.encode(torch.zeros(1, 3, 3, 24, 24))
    # a local model directory: its config.json says
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"patch_size": 14, "tubelet_size": 2}))
    assert encoder_geometry("vjepa2", {"model": str(model)}) == (14, 2)
    with pytest.raises(ConfigError, match="'image_size': 64 .*multiple of 14, the patch size"):
        make_config(encoder="vjepa2", encoder_model=str(model))
    assert make_config(encoder="vjepa2", encoder_model=str(model), image_size=56).image_size == 56


# ---- YAML files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "named"), [
    ("reg: [sparse\nsteps: 3\n", "line 2 column 6"),
    ("steps: 3\n  beta: 0.1\n", "line 2"),
    ("steps: 3\nbeta: 0.1\nsteps: 4\n", "line 3: duplicate key 'steps' (first on line 1)"),
    ("{steps: 3, steps: 4}\n", "duplicate key 'steps'"),
    ("steps: 2024-13-45\n", "invalid YAML"),  # PyYAML raises a plain ValueError for this date
    ("? [a]\n: 1\n", "unhashable"),  # a TypeError in a duplicate check that hashes keys
    ("out: !!python/object/apply:os.system [true]\n", "python/object/apply"),
    ("---\nsteps: 1\n---\nsteps: 2\n", "single document"),
    ("- steps\n", "mapping"),
])
def test_a_bad_yaml_file_is_a_config_error_naming_file_and_line(tmp_path, text, named):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        make_config(path)
    message = str(caught.value)
    assert str(path) in message and named in message and "\n" not in message


def test_an_unreadable_config_file_is_a_config_error_naming_it(tmp_path):
    for path, why in [(tmp_path / "missing.yaml", "no such file"), (tmp_path, "is a directory")]:
        with pytest.raises(ConfigError, match=f"{path}: {why}"):
            make_config(path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00steps")
    with pytest.raises(ConfigError, match="not UTF-8"):
        make_config(binary)


def test_yaml_values_are_typed_and_numbers_read_from_strings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("beta: 1e-4\nsteps: '10'\nlambda_l1: 1\n")  # PyYAML reads 1e-4 as a string
    cfg = make_config(path)
    assert (cfg.beta, cfg.steps, cfg.lambda_l1) == (1e-4, 10, 1.0)
    for text, key in [("steps: .inf\n", "steps"), ("fps: .nan\n", "fps"), ("steps: !!binary aGVsbG8=\n", "steps"),
                      ("batch_size: yes\n", "batch_size"), ("muon_lr: 3e38\n", "muon_lr"), ("out: ''\n", "out")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"'{key}'"):
            make_config(path)


# ---- the command line: one line, exit 2, before any training --------------------------------------


@pytest.mark.parametrize(("args", "yaml_text", "key"), [
    (["--lambda-l1", "-1"], None, "lambda_l1"),  # trained to a negative loss, exit 0
    ([], "muon_lr: 3.0e+38\n", "muon_lr"),  # RuntimeError from inside Muon
])
def test_train_refuses_a_bad_setting_in_one_line(tmp_path, args, yaml_text, key):
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        args = [*args, "--config", str(tmp_path / "c.yaml")]
    proc = subprocess.run([sys.executable, "train/run.py", *args, "--engine", "local", "--data", str(tmp_path),
                           "--out", str(tmp_path / "run"), "--steps", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train/run.py: error: ") and f"'{key}'" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()

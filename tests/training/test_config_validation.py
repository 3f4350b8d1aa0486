"""Every setting is checked when the config is built, naming the key (issue 13, item 4 and the
learning rates of item 6); each of these was accepted or a traceback from deep inside training before."""

import math

import pytest

from lam_fast.errors import UserError
from lam_fast.training.config import MAX_LR, ConfigError, make_config


@pytest.mark.parametrize("key, value, named", [
    ("lambda_l1", -1.0, "lambda_l1"),          # trained to a negative loss with rc 0
    ("beta", -1.0, "beta"),
    ("lambda_l1", math.nan, "lambda_l1"),
    ("codebook_size", 0, "codebook_size"),      # a traceback in the quantizer
    ("patch_size", 0, "patch_size"),
    ("image_size", 7, "image_size"),            # not divisible by the pixels patch (8)
    ("muon_lr", 3e38, "muon_lr"),               # overflowed inside Muon
    ("adamw_lr", math.inf, "adamw_lr"),
    ("muon_lr", 0.0, "muon_lr"),
    ("weight_decay", -0.1, "weight_decay"),
    ("grad_clip", 0.0, "grad_clip"),
    ("fps", math.inf, "fps"),
    ("warmup_frac", math.nan, "warmup_frac"),
])
def test_an_invalid_setting_is_refused_naming_its_key(key, value, named):
    with pytest.raises(ConfigError, match=named) as info:
        make_config(**{key: value})
    assert isinstance(info.value, UserError)


def test_image_size_must_fit_the_encoder():
    make_config(image_size=48, patch_size=16)
    with pytest.raises(ConfigError, match="divisible by 'patch_size' \\(16\\)"):
        make_config(image_size=40, patch_size=16)
    with pytest.raises(ConfigError, match="effnet"):
        make_config(encoder="effnet", image_size=36)


def test_boundary_values_are_accepted():
    cfg = make_config(lambda_l1=0.0, beta=0.0, codebook_size=1, muon_lr=MAX_LR, adamw_lr=1e-12, weight_decay=0.0)
    assert cfg.lambda_l1 == 0.0 and cfg.codebook_size == 1


def test_a_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        make_config(tmp_path / "nope.yaml")


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: 3\nreg: [sparse\nbeta: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: YAML error at line \d+"):
        make_config(path)


def test_a_duplicate_key_is_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("steps: 3\nreg: sparse\nsteps: 5\n")  # yaml.safe_load silently kept 5
    with pytest.raises(ConfigError, match=r"dup\.yaml: duplicate config key 'steps' \(line 3\)"):
        make_config(path)


def test_unsafe_yaml_tags_are_config_errors(tmp_path):
    path = tmp_path / "tag.yaml"
    path.write_text("steps: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="tag.yaml: YAML error"):
        make_config(path)


def test_every_preset_and_the_defaults_validate():
    from lam_fast.models.config import PREDICTOR_PRESETS

    for preset in PREDICTOR_PRESETS:
        assert make_config(preset=preset).preset == preset

"""TrainConfig's encoder keys: validated, strict (an option the encoder does not take is an error),
and old run directories (whose config.yaml holds ``patch_size: 8`` for every encoder) still load."""

from __future__ import annotations

import pytest
import yaml

from lam_fast.models.encoders import DEFAULT_VJEPA2_MODEL
from lam_fast.training.config import ConfigError, TrainConfig, make_config, save_config


@pytest.mark.parametrize(("key", "value"), [("preset", "huge"), ("encoder", "resnet")])
def test_unknown_preset_or_encoder_is_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}': '{value}'"):
        make_config(**{key: value})
    with pytest.raises(ConfigError, match=f"'{key}'"):
        TrainConfig(**{key: value})


def test_an_option_the_encoder_does_not_take_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="config key 'patch_size' \\(4\\) does not apply to encoder 'effnet'"):
        make_config(encoder="effnet", patch_size=4)
    with pytest.raises(ConfigError, match="'patch_size' \\(8\\) does not apply to encoder 'vjepa2'"):
        TrainConfig(encoder="vjepa2", patch_size=8)  # 8 given explicitly is no old default
    with pytest.raises(ConfigError, match="config key 'encoder_model' \\('some/model'\\) does not apply to "
                                          "encoder 'pixels'; only to vjepa2"):
        make_config(encoder_model="some/model")
    with pytest.raises(ConfigError, match="'patch_size': 0"):
        make_config(patch_size=0)


def test_encoder_options_have_the_defaults_filled_in():
    assert make_config().patch_size == 8  # pixels: the default is filled in, config.yaml as before
    assert make_config().encoder_options() == {"patch_size": 8}
    assert make_config(patch_size=4).encoder_options() == {"patch_size": 4}
    assert make_config(encoder="effnet").patch_size is None
    assert make_config(encoder="effnet").encoder_options() == {"stage": 4}
    assert make_config(encoder="vjepa2").encoder_options() == {"model": DEFAULT_VJEPA2_MODEL}
    assert make_config(encoder="vjepa2", encoder_model="local/dir").encoder_options() == {"model": "local/dir"}


def test_an_old_effnet_run_config_still_loads(tmp_path):
    # what save_config wrote for an effnet run before encoder options were strict
    old = TrainConfig().to_dict() | {"encoder": "effnet", "patch_size": 8, "image_size": 64}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=True))
    cfg = make_config(path)
    assert (cfg.encoder, cfg.patch_size, cfg.encoder_options()) == ("effnet", None, {"stage": 4})
    # a resumed run compares the saved config with the command line's: the two agree
    assert cfg.to_dict() == make_config(encoder="effnet", image_size=64).to_dict()
    # an override of 8, or a file's other value, is not the old default
    with pytest.raises(ConfigError, match="'patch_size' \\(8\\) does not apply to encoder 'effnet'"):
        make_config(path, patch_size=8)
    path.write_text(yaml.safe_dump(old | {"patch_size": 16}, sort_keys=True))
    with pytest.raises(ConfigError, match="'patch_size' \\(16\\) does not apply"):
        make_config(path)


def test_new_configs_round_trip(tmp_path):
    for cfg in (make_config(encoder="effnet"), make_config(patch_size=4), make_config(encoder="vjepa2")):
        save_config(cfg, tmp_path / "config.yaml")
        assert make_config(tmp_path / "config.yaml") == cfg
    save_config(make_config(), tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["patch_size"] == 8

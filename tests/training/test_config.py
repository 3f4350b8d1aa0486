import pytest

from lam_fast.training import ConfigError, make_config


def test_defaults_yaml_and_flags_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("reg: noisy\nbeta: 0.001\nsteps: 50\n")
    cfg = make_config(path, steps=7, lambda_l1=None)
    assert (cfg.reg, cfg.beta, cfg.steps, cfg.lambda_l1) == ("noisy", 0.001, 7, 0.05)
    assert cfg.model_config().noisy.beta == 0.001
    assert make_config(residual=False).model_config().residual is False


def test_unknown_key_raises_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("reg: sparse\nlamda_l1: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'lamda_l1'"):
        make_config(path)
    with pytest.raises(ConfigError, match="'bogus'"):
        make_config(bogus=1)


@pytest.mark.parametrize(
    "text, key",
    [("steps: ten\n", "steps"), ("steps: 2.5\n", "steps"), ("reg: sparsey\n", "reg"), ("zero_stage: 4\n", "zero_stage"),
     ("batch_size: true\n", "batch_size"), ("residual: 1\n", "residual"), ("data: null\nout: null\n", "out")],
)
def test_bad_values_name_the_key(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=key):
        make_config(path)


def test_non_mapping_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        make_config(path)


def test_deepspeed_config_merge_and_batch_mismatch(tmp_path):
    import json

    from lam_fast.training.engine import deepspeed_config

    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2, "overlap_comm": True}, "gradient_clipping": 0.5}))
    ds = deepspeed_config(make_config(deepspeed_config=str(path), batch_size=4), on_gpu=False)
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": True} and ds["gradient_clipping"] == 0.5
    assert ds["optimizer"]["type"] == "Muon" and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["bf16"]["enabled"] is False and deepspeed_config(make_config(), on_gpu=True)["bf16"]["enabled"] is True
    assert deepspeed_config(make_config(zero_stage=3), on_gpu=False)["zero_optimization"]["reduce_scatter"] is False
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 16}))
    with pytest.raises(ConfigError, match="train_micro_batch_size_per_gpu"):
        deepspeed_config(make_config(deepspeed_config=str(path), batch_size=4), on_gpu=False)
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert deepspeed_config(make_config(deepspeed_config=str(path)), on_gpu=False)["zero_optimization"] == {
        "stage": 3, "reduce_scatter": False}


def test_old_reg_name_none_still_loads_as_unconstrained(tmp_path):
    """config.yaml of runs trained before the rename say ``reg: none``; ``--reg none`` still parses."""
    from lam_fast.cli.train import build_parser

    old = tmp_path / "config.yaml"
    old.write_text("reg: none\nsteps: 5\n")
    cfg = make_config(old)
    assert cfg.reg == "unconstrained" and cfg.model_config().reg == "unconstrained"
    assert make_config(old, reg="unconstrained") == cfg
    assert build_parser().parse_args(["--reg", "none"]).reg == "none"
    assert build_parser().parse_args(["--reg", "unconstrained"]).reg == "unconstrained"

"""A derandomised fuzz of the config loader (issue 13, item 7): any YAML document of known and
unknown keys with values of any type, any keyword overrides, and any short text give a TrainConfig
that passes its own validation (rebuilt from its fields, saved and loaded again: the same config)
or a ConfigError; no other exception. The repo's hypothesis profile (tests/conftest.py: derandomised,
25 examples a test) keeps it to about a second."""

import dataclasses

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lam_fast.training.config import ConfigError, TrainConfig, make_config, save_config

KEYS = [f.name for f in dataclasses.fields(TrainConfig)] + ["nope", "Steps"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["sparse", "none", "tiny", "pixels", "effnet", "vjepa2", "local", "bf16", "8",
                                     "1e-3", "nan", "inf", "-1", "", " ", "10", "2.5"]),
                    st.sampled_from([0, 1, 2, 4, 7, 8, 16, 32, 64, 0.5, 1e-4, 3e38]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))
MAPPINGS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)
# YAML syntax, tags, dates, anchors, merges, complex keys and duplicates in short random texts
PIECES = st.sampled_from(["steps", "reg", "out", "image_size", "patch_size", "muon_lr", ": ", ":", "\n", "  ", "-",
                          "[", "]", "{", "}", ",", "'", '"', "!!", "!!python/object/apply:os.system", "!!binary",
                          "&a", "*a", "<<", "? ", "#", "|", ">", "%YAML", "---", "...", "0", "1", "8", "-1",
                          "1e-4", ".inf", ".nan", "2024-13-45", "2024-01-01", "yes", "~", "null", "\t", "é", "\x00"])
FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _holds(cfg: TrainConfig, tmp_path) -> None:
    assert isinstance(cfg, TrainConfig)
    assert TrainConfig(**cfg.to_dict()) == cfg  # it revalidates
    save_config(cfg, tmp_path / "saved.yaml")
    assert make_config(tmp_path / "saved.yaml") == cfg  # and loads as itself


def _check(path, tmp_path) -> None:
    try:
        cfg = make_config(path)
    except ConfigError:
        return
    _holds(cfg, tmp_path)


@FUZZ
@given(MAPPINGS)
def test_any_mapping_is_a_config_or_a_config_error(tmp_path, mapping):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(mapping))
    _check(path, tmp_path)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), SCALARS, max_size=6))
def test_any_overrides_are_a_config_or_a_config_error(tmp_path, overrides):
    try:
        cfg = make_config(**overrides)
    except ConfigError:
        return
    _holds(cfg, tmp_path)


@FUZZ
@given(st.lists(PIECES, max_size=16).map("".join))
def test_any_text_is_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    _check(path, tmp_path)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("steps: reg[]{},'\"!&*#\n-0123.e:\t?|>%@`")), max_size=40))
def test_any_characters_are_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    _check(path, tmp_path)

"""A derandomised fuzz of the config loader (issue 13, item 7): any YAML document of known and
unknown keys with values of any type gives a TrainConfig or a ConfigError, nothing else."""

import dataclasses

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lam_fast.training.config import ConfigError, TrainConfig, make_config

KEYS = [f.name for f in dataclasses.fields(TrainConfig)] + ["nope", "Steps"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["sparse", "none", "tiny", "pixels", "effnet", "local", "bf16", "8", "1e-3",
                                     "nan", "inf", "-1"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))


def _check(path):
    try:
        cfg = make_config(path)
    except ConfigError:
        return
    assert isinstance(cfg, TrainConfig)
    assert make_config(**{k: v for k, v in cfg.to_dict().items() if v is not None}) == cfg  # it revalidates


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_any_mapping_is_a_config_or_a_config_error(tmp_path, mapping):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(mapping))
    _check(path)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("steps: reg[]{},'\"!&*#\n-0123.e:\t?|>%@`")), max_size=40))
def test_any_text_is_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    _check(path)

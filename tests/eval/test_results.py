"""lam_fast.eval.results: every kind round-trips, old files read, missing / unknown keys are named."""

import json

import pytest

from lam_fast.eval.results import (
    ABSENT,
    RESULT_TYPES,
    CapacityResult,
    DecoderResult,
    LeakageResult,
    PlanResult,
    TransferResult,
    read_result,
    result_from_dict,
    result_kind,
    write_result,
)


def test_every_kind_has_an_old_file(old_kinds):
    assert set(old_kinds.values()) == set(RESULT_TYPES)


def test_old_files_read_as_their_kind_and_keep_their_keys(old_files, old_kinds, tmp_path):
    for name, data in old_files.items():
        path = tmp_path / name
        path.write_text(json.dumps(data))
        result = read_result(path)
        assert result.protocol == old_kinds[name] and type(result) is RESULT_TYPES[old_kinds[name]]
        # the same keys and values (a decoder file gains only its kind)
        assert result.to_dict() == {"protocol": result.protocol, **data}


@pytest.mark.parametrize("name", ["leakage.json", "transfer.json", "capacity.json", "controller.json",
                                  "action_model.json", "plan_latent.json", "plan_random.json", "decoder.json"])
def test_round_trip(name, old_files, tmp_path):
    result = result_from_dict(old_files[name], name)
    again = type(result).from_dict(result.to_dict(), name)
    assert again == result
    path = write_result(tmp_path / "sub" / name, result)
    assert read_result(path) == result and json.loads(path.read_text())["protocol"] == result.protocol
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_a_missing_key_is_named_with_the_file(old_files, tmp_path):
    data = old_files["leakage.json"]
    del data["ratio"]
    path = tmp_path / "leak.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"leak\.json: missing key 'ratio'"):
        read_result(path)
    capacity = old_files["capacity.json"]
    del capacity["runs"][1]["error"]
    with pytest.raises(ValueError, match=r"cap\.json: runs\[1\]: missing key 'error'"):
        result_from_dict(capacity, "cap.json")
    plan = old_files["plan_random.json"]
    del plan["rpe"]  # absent-able in general, required for a nav plan
    with pytest.raises(ValueError, match=r"p\.json: missing key 'rpe'.*nav"):
        result_from_dict(plan, "p.json")


def test_an_unknown_key_or_kind_is_named(old_files):
    with pytest.raises(ValueError, match=r"x\.json: unknown key 'surprise'"):
        result_from_dict({**old_files["controller.json"], "surprise": 1}, "x.json")
    with pytest.raises(ValueError, match=r"x\.json: key 'protocol' is 'nope'"):
        result_from_dict({**old_files["controller.json"], "protocol": "nope"}, "x.json")
    with pytest.raises(ValueError, match=r"x\.json: key 'protocol' is 'plan', expected 'leakage'"):
        LeakageResult.from_dict(old_files["plan_latent.json"], "x.json")
    with pytest.raises(ValueError, match=r"x\.json: missing key 'protocol'"):
        result_from_dict({"ratio": 1.0}, "x.json")
    with pytest.raises(ValueError, match=r"x\.json: expected a JSON object"):
        result_from_dict([1, 2], "x.json")


def test_kind_comes_from_content_not_the_file_name(old_files, tmp_path):
    path = tmp_path / "plan_looks_like_a_plan.json"  # named like a plan, holds a controller result
    path.write_text(json.dumps(old_files["controller.json"]))
    assert read_result(path).protocol == "controller"
    assert result_kind(old_files["decoder.json"]) == "decoder"  # no protocol: recognised by its keys


def test_optional_fields_are_absent_not_null(old_files):
    leak = result_from_dict(old_files["leakage.json"])
    assert leak.figure is ABSENT and "figure" not in leak.to_dict()
    decoder = DecoderResult.from_dict(old_files["decoder.json"])
    assert decoder.inverse_psnr is None and decoder.to_dict()["inverse_psnr"] is None  # present, null
    del old_files["decoder.json"]["inverse_psnr"]  # another encoder: absent
    assert "inverse_psnr" not in DecoderResult.from_dict(old_files["decoder.json"]).to_dict()
    plan = PlanResult.from_dict(old_files["plan_random.json"])
    assert plan.final_cost is ABSENT and plan.delta_actions is ABSENT and plan.metrics == {"ate": 2.5, "rpe": 0.7}


def test_typed_accessors(old_files):
    transfer = TransferResult.from_dict(old_files["transfer.json"])
    assert transfer.clips == 2 and transfer.error_changed_or_transferred == 0.36
    capacity = CapacityResult.from_dict(old_files["capacity.json"])
    assert capacity.runs[0].knob_value == 0.02 and capacity.baseline.run == "runs/det"


def test_each_kind_keeps_its_json_format(old_files, tmp_path):
    plan = write_result(tmp_path / "p.json", result_from_dict(old_files["plan_latent.json"])).read_text()
    keys = list(json.loads(plan))
    assert keys == sorted(keys) and plan.startswith('{\n "')  # planning: sorted keys, indent 1
    decoder = result_from_dict(old_files["decoder.json"])
    nan = DecoderResult.from_dict({**decoder.to_dict(), "ssim": float("nan")})
    with pytest.raises(ValueError):  # train-decoder never wrote NaN
        write_result(tmp_path / "d.json", nan)
    with pytest.raises(TypeError):
        write_result(tmp_path / "x.json", old_files["decoder.json"])

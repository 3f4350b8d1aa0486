"""Checkpoints are checked before use (issue 13): a broken newest one is skipped with a warning naming
the file and why, and the run resumes (or opens) from the newest intact one; with none intact, one
CheckpointError. ``latest`` is a name, never a path. A torn last line of metrics.jsonl is dropped.
Stale staging folders and checkpoints over ``keep_last`` are cleared when a run starts."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lam_fast.errors import CheckpointError, RunLocked
from lam_fast.io import DirectoryLock
from lam_fast.runs import load_run
from lam_fast.training import Trainer, make_config, train
from lam_fast.training import checkpoint as ckpt
from lam_fast.training.checkpoint import CheckpointWarning

SMALL = dict(engine="local", preset="tiny", image_size=32, patch_size=8, num_frames=4, fps=4.0, batch_size=2,
             num_workers=0, latent_dim=16, log_every=1, reg="noisy", steps=4, save_every=2, keep_last=5)


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def run(video_folder, tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("validated") / "run"
    train(make_config(**SMALL, data=str(video_folder), out=str(out)))
    return out


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    copy = tmp_path / name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("tensorboard"))
    return copy


def _cfg(video_folder, out: Path, **overrides):
    return make_config(**dict(SMALL, **overrides), data=str(video_folder), out=str(out))


def _wrong_shape(step: Path) -> None:
    tensors = load_file(str(step / "model.safetensors"))
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = tensors[name][:-1].contiguous()
    save_file(tensors, str(step / "model.safetensors"))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated model": (lambda s: _truncate(s / "model.safetensors"), r"model\.safetensors: truncated"),
    "garbage trainer.json": (lambda s: (s / "trainer.json").write_text("{not json"), r"trainer\.json: not JSON"),
    "garbage optimizer json": (lambda s: (s / "optimizer_rank0.json").write_text("\x00garbage"),
                               r"optimizer_rank0\.json: not JSON"),
    "trainer.json with a step only": (lambda s: (s / "trainer.json").write_text('{"step": 4}'),
                                      r"trainer\.json: no 'videos_seen'"),
    "wrong-shaped tensor": (_wrong_shape, r"model\.safetensors: .* has shape"),
    "missing optimizer tensors": (lambda s: (s / "optimizer_rank0.safetensors").unlink(),
                                  r"optimizer_rank0\.safetensors"),
    "truncated optimizer tensors": (lambda s: _truncate(s / "optimizer_rank0.safetensors"),
                                    r"optimizer_rank0\.safetensors: truncated"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_resume_skips_a_broken_newest_checkpoint(run, video_folder, tmp_path, corruption):
    damage, why = CORRUPTIONS[corruption]
    out = _copy(run, tmp_path)
    damage(out / "checkpoints" / ckpt.step_dir_name(4))
    with pytest.warns(CheckpointWarning, match=rf"skipping checkpoint .*step_00000004: {why}"):
        result = train(_cfg(video_folder, out), resume=True)
    assert result.step == 4
    assert _losses(out) == _losses(run)  # steps 3 and 4 replayed from step 2: the same run
    assert (out / "checkpoints" / "step_00000004.broken").is_dir()  # kept for inspection, never listed
    assert [p.name for p in ckpt.list_checkpoints(out)] == [ckpt.step_dir_name(2), ckpt.step_dir_name(4)]
    fresh = load_file(str(out / "checkpoints" / ckpt.step_dir_name(4) / "model.safetensors"))
    original = load_file(str(run / "checkpoints" / ckpt.step_dir_name(4) / "model.safetensors"))
    assert all(torch.equal(fresh[k], original[k]) for k in original)


def test_resume_without_an_intact_checkpoint_is_one_error(run, video_folder, tmp_path):
    out = _copy(run, tmp_path)
    (out / "checkpoints" / ckpt.step_dir_name(4) / "trainer.json").write_text('{"step": 4}')
    _truncate(out / "checkpoints" / ckpt.step_dir_name(2) / "model.safetensors")
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError) as error:
        train(_cfg(video_folder, out), resume=True)
    assert "step_00000004: trainer.json: no 'videos_seen'" in str(error.value)
    assert "step_00000002: model.safetensors: truncated" in str(error.value)
    assert ckpt.list_checkpoints(out)  # nothing moved or deleted when the run cannot start
    DirectoryLock(out).acquire().release()  # the failed Trainer let go of the run directory


def test_another_models_checkpoint_is_a_config_error_not_a_broken_one(run, video_folder, tmp_path):
    from lam_fast.training import ConfigError

    out = _copy(run, tmp_path)
    with pytest.raises(ConfigError, match="different configuration"):
        train(_cfg(video_folder, out, latent_dim=8), resume=True)  # other shapes
    assert [p.name for p in ckpt.list_checkpoints(out)] == [ckpt.step_dir_name(2), ckpt.step_dir_name(4)]


@pytest.mark.parametrize("pointer", ["absolute", "../../other/checkpoints/step_00000004", "step_00000004/..",
                                     "checkpoints"])
def test_latest_is_a_name_not_a_path(run, video_folder, tmp_path, pointer):
    other = _copy(run, tmp_path, "other")  # another run, with a step 4
    out = _copy(run, tmp_path)
    shutil.rmtree(out / "checkpoints" / ckpt.step_dir_name(4))
    target = str(other / "checkpoints" / ckpt.step_dir_name(4)) if pointer == "absolute" else pointer
    (out / "checkpoints" / "latest").write_text(target + "\n")
    with pytest.warns(CheckpointWarning, match="not the name of a step_\\* folder beside it: ignored"):
        trainer = Trainer(_cfg(video_folder, out), resume=True)
    trainer.close()
    assert trainer.resumed_from == out / "checkpoints" / ckpt.step_dir_name(2)
    with pytest.warns(CheckpointWarning):
        assert ckpt.latest_checkpoint(out) == out / "checkpoints" / ckpt.step_dir_name(2)


def test_load_run_falls_back_and_a_named_broken_checkpoint_is_an_error(run, tmp_path):
    out = _copy(run, tmp_path)
    newest = out / "checkpoints" / ckpt.step_dir_name(4)
    _wrong_shape(newest)
    with pytest.warns(CheckpointWarning, match=r"skipping checkpoint .*step_00000004: model\.safetensors: .* has shape"):
        cfg, encoder, model = load_run(out)
    saved = load_file(str(out / "checkpoints" / ckpt.step_dir_name(2) / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match=r"step_00000004 is unusable: model\.safetensors: .* has shape"):
        load_run(newest)
    _truncate(newest / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated"):
        load_run(newest)


def test_a_torn_last_metrics_line_is_dropped_on_resume(run, video_folder, tmp_path):
    out = _copy(run, tmp_path)
    shutil.rmtree(out / "checkpoints" / ckpt.step_dir_name(4))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # died writing step 4
    with pytest.warns(UserWarning, match="torn last line"):
        assert train(_cfg(video_folder, out), resume=True).step == 4
    assert _losses(out) == _losses(run)


def test_leftovers_and_over_count_checkpoints_are_cleared_at_start(run, video_folder, tmp_path):
    out = _copy(run, tmp_path)
    (out / "checkpoints" / "step_00000006.tmp").mkdir()
    Trainer(_cfg(video_folder, out, keep_last=1), resume=True).close()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", ckpt.step_dir_name(4)]
    fresh = tmp_path / "fresh"
    (fresh / "checkpoints" / "step_00000002.tmp").mkdir(parents=True)  # a first save that died
    Trainer(_cfg(video_folder, fresh)).close()
    assert list((fresh / "checkpoints").iterdir()) == []


def test_a_trainer_holds_its_run_directory_until_it_ends(run, video_folder, tmp_path):
    out = tmp_path / "run"
    first = Trainer(_cfg(video_folder, out, steps=2))
    with pytest.raises(RunLocked, match=r"in use by another run \(pid \d+ on host "):
        train(_cfg(video_folder, out, steps=2))
    assert not (out / "config.yaml").exists()  # the refused run wrote nothing
    assert first.train().step == 2
    assert train(_cfg(video_folder, out, steps=2), resume=True).step == 2  # released when the first ended

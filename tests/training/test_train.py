"""Training loop (local engine, in-process): learning, exact resume, NaN stop, bad data, checkpoints."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lam_fast.models import LatentActionWorldModel
from lam_fast.training import NonFiniteLossError, make_config, train
from lam_fast.training import checkpoint as ckpt
from lam_fast.io import load_tree, save_tree

# num_workers=0: several tests patch decoding in this process (DataLoader workers would not see it).
SMALL = dict(engine="local", preset="tiny", image_size=32, patch_size=8, num_frames=4, fps=4.0, batch_size=2, num_workers=0,
             latent_dim=16, log_every=1)


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def test_training_lowers_the_loss(video_folder, tmp_path):
    # the unconstrained latent isolates the prediction loss; "learned" means beating the copy baseline
    cfg = make_config(**dict(SMALL, batch_size=4), reg="none", data=str(video_folder), steps=150,
                      out=str(tmp_path / "run"), save_every=150)
    result = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    # 30-step windows: single batches differ a lot in difficulty (typical values: 0.85, 0.84)
    assert mean(records[-30:], "pred_l1") < 0.92 * mean(records[:10], "pred_l1")
    assert mean(records[-30:], "pred/rel_to_copy") < 0.9  # better than predicting "no change"
    assert result.step == 150 and result.checkpoint is not None


@pytest.mark.parametrize("reg", ["noisy", "discrete"])
def test_resume_equals_uninterrupted(video_folder, tmp_path, reg):
    common = dict(SMALL, reg=reg, data=str(video_folder), steps=8, save_every=4, keep_last=5, codebook_size=8,
                  vq_reset_every=6)
    full = tmp_path / "full"
    train(make_config(**common, out=str(full)))
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / ckpt.step_dir_name(4), part / "checkpoints" / ckpt.step_dir_name(4))
    # as if the interrupted run had logged steps 1-6 before dying: 5 and 6 are replayed, not duplicated
    (part / "metrics.jsonl").write_text("".join(l + "\n" for l in (full / "metrics.jsonl").read_text().splitlines()[:6]))
    result = train(make_config(**common, out=str(part)), resume=True)
    assert result.step == 8
    a, b = _losses(full), _losses(part)
    steps = [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    assert [a[s] for s in range(5, 9)] == [b[s] for s in range(5, 9)]  # bitwise equal losses
    wa = load_file(str(full / "checkpoints" / ckpt.step_dir_name(8) / "model.safetensors"))
    wb = load_file(str(part / "checkpoints" / ckpt.step_dir_name(8) / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(video_folder, tmp_path, monkeypatch):
    original = LatentActionWorldModel.forward
    calls = {"n": 0}

    def poisoned(self, states):
        calls["n"] += 1
        out = original(self, states)
        if calls["n"] >= 4:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(LatentActionWorldModel, "forward", poisoned)
    out = tmp_path / "run"
    cfg = make_config(**SMALL, reg="sparse", data=str(video_folder), steps=10, out=str(out), save_every=2)
    with pytest.raises(NonFiniteLossError, match="step 4.*Last good checkpoint: .*step_00000002"):
        train(cfg)
    good = ckpt.latest_checkpoint(out)
    assert good.name == ckpt.step_dir_name(2)
    weights = load_file(str(good / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert json.loads((good / "trainer.json").read_text())["step"] == 2
    load_tree(good / "optimizer_rank0")


def test_corrupt_videos_are_skipped_and_counted(folder_with_corrupt, tmp_path):
    out = tmp_path / "run"
    with pytest.warns(UserWarning):
        result = train(make_config(**SMALL, reg="sparse", data=str(folder_with_corrupt), steps=2, out=str(out)))
    assert result.skipped == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["data/skipped"] == 2 for r in records)


def test_checkpoint_is_complete_and_pickle_free(video_folder, tmp_path):
    out = tmp_path / "run"
    train(make_config(**SMALL, reg="discrete", codebook_size=8, data=str(video_folder), steps=3, save_every=1,
                      keep_last=2, out=str(out)))
    kept = ckpt.list_checkpoints(out)
    assert [p.name for p in kept] == [ckpt.step_dir_name(2), ckpt.step_dir_name(3)]
    latest = ckpt.latest_checkpoint(out)
    assert latest == kept[-1]
    names = {p.name for p in latest.iterdir()}
    assert names == {"model.safetensors", "optimizer_rank0.json", "optimizer_rank0.safetensors", "trainer.json",
                     "config.yaml", "versions.json"}
    assert "torch" in json.loads((latest / "versions.json").read_text())
    assert "reg: discrete" in (latest / "config.yaml").read_text()
    model, encoder, cfg = ckpt.load_world_model(out)
    assert cfg.reg == "discrete" and encoder.name == "pixels" and not model.training
    saved = load_file(str(latest / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) and v.dtype == saved[k].dtype for k, v in model.state_dict().items())
    # a staging directory left by a crash is never picked up
    (out / "checkpoints" / "step_00000009.tmp").mkdir()
    assert ckpt.latest_checkpoint(out) == latest


def test_safe_tree_round_trip_and_refuses_objects(tmp_path):
    state = {"a": torch.arange(3), 1: [1.5, None, (True, "x")], "d": torch.float16, "nested": {"t": torch.ones(2, 2)}}
    save_tree(state, tmp_path / "s")
    back = load_tree(tmp_path / "s")
    assert torch.equal(back["a"], state["a"]) and back[1] == [1.5, None, (True, "x")] and back["d"] is torch.float16
    with pytest.raises(TypeError, match="cannot checkpoint a .*object"):
        save_tree({"bad": object()}, tmp_path / "bad")


def test_clips_failing_at_read_time_are_counted_and_skipped(video_folder, tmp_path, monkeypatch):
    from lam_fast.data import VideoClipDataset

    original = VideoClipDataset.__getitem__
    failing = set()

    def flaky(self, index):
        if len(failing) < 2 and index not in failing:  # the whole first batch fails to decode
            failing.add(index)
            return None
        return original(self, index)

    monkeypatch.setattr(VideoClipDataset, "__getitem__", flaky)
    out = tmp_path / "run"
    result = train(make_config(**SMALL, reg="sparse", data=str(video_folder), steps=3, out=str(out)))
    assert result.step == 3 and result.skipped == 2
    meta = json.loads((ckpt.latest_checkpoint(out) / "trainer.json").read_text())
    assert meta["batches_read"] == 4 and meta["read_failures"] == 2


def test_bf16_autocast_local(video_folder, tmp_path, monkeypatch):
    from lam_fast.models.predictor import Predictor

    dtypes = []
    original = Predictor.forward

    def spy(self, states, cond, cache=None):
        dtypes.append(self.embed(states[:, :1].reshape(states.shape[0], -1, states.shape[-1])).dtype)
        return original(self, states, cond, cache)

    monkeypatch.setattr(Predictor, "forward", spy)
    out = tmp_path / "run"
    result = train(make_config(**SMALL, reg="noisy", precision="bf16", data=str(video_folder), steps=2, out=str(out)))
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert all(v == v for v in _losses(out).values()) and result.step == 2


def test_fresh_run_refuses_an_existing_run_and_resume_refuses_other_settings(video_folder, tmp_path):
    from lam_fast.training import ConfigError

    out = tmp_path / "run"
    common = dict(SMALL, reg="sparse", data=str(video_folder), out=str(out), save_every=1)
    train(make_config(**common, steps=1))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(make_config(**common, steps=2))
    with pytest.raises(ConfigError, match="lambda_l1: 0.05 in the checkpoint, 0.2 now"):
        train(make_config(**common, steps=2, lambda_l1=0.2), resume=True)
    from lam_fast.training.loop import ScheduleChangeWarning

    with pytest.warns(ScheduleChangeWarning):  # more steps is allowed, and says the schedule changes
        assert train(make_config(**common, steps=2), resume=True).step == 2


def test_resume_with_other_steps_warns_that_the_schedule_changes(video_folder, tmp_path):
    """``steps`` may change on resume (to extend a run) but it stretches the warm-up + cosine schedule:
    the resumed run follows the new total's rates, and says so; the bookkeeping keys change nothing."""
    import warnings

    from lam_fast.training.loop import ScheduleChangeWarning
    from lam_fast.training.optim import warmup_cosine

    out = tmp_path / "run"
    common = dict(SMALL, reg="sparse", data=str(video_folder), out=str(out), save_every=2, warmup_frac=0.5)
    cfg = make_config(**common, steps=2)
    train(cfg)
    old, new = warmup_cosine(2, 0.5)(2), warmup_cosine(4, 0.5)(2)
    assert old != new
    with pytest.warns(ScheduleChangeWarning, match=rf"steps 2 -> 4.*at step 2: {old:g} -> {new:g}"):
        train(make_config(**common, steps=4), resume=True)
    records = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    assert records[3]["lr/adamw"] == pytest.approx(cfg.adamw_lr * warmup_cosine(4, 0.5)(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleChangeWarning)
        assert train(make_config(**dict(common, log_every=2, keep_last=2), steps=4), resume=True).step == 4


def test_non_finite_gradient_stops_before_the_update(video_folder, tmp_path, monkeypatch):
    from lam_fast.training.engine import LocalEngine

    original = LocalEngine.step

    def poisoned(self, loss):
        return original(self, loss * float("inf")) if self.scheduler.last_epoch >= 2 else original(self, loss)

    monkeypatch.setattr(LocalEngine, "step", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="gradient norm became nan at step 3"):
        train(make_config(**SMALL, reg="sparse", data=str(video_folder), steps=5, out=str(out), save_every=1))
    assert ckpt.latest_checkpoint(out).name == ckpt.step_dir_name(2)

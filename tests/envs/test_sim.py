"""Action-labelled MuJoCo video (lam_fast.envs): determinism, kinematics, files, CLI, and the
render-unavailable error that the rendering tests (and only they) skip on."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

# find_spec, not importorskip: mujoco must first be imported by lam_fast.envs.render.import_mujoco,
# which sets MUJOCO_GL=egl right before
if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("dm_control") is None:
    pytest.skip("needs mujoco and dm_control (the 'sim' extra)", allow_module_level=True)

from lam_fast import envs as sim  # noqa: E402  (after the skip)
from lam_fast.envs import episodes as episode_files  # noqa: E402
from lam_fast.envs import nav, render  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def can_render() -> None:
    """Skip rendering tests where no offscreen OpenGL (EGL/OSMesa) is available: on
    RenderUnavailable only, so any other error of the simulator fails the tests."""
    try:
        sim.render_episode("reacher", seed=0, frames=2, image_size=SIZE)
    except sim.RenderUnavailable as error:
        pytest.skip(f"no MuJoCo offscreen rendering here: {error}")


@pytest.fixture(scope="module")
def episodes(can_render) -> dict[str, sim.SimEpisode]:
    return {task: sim.render_episode(task, seed=7, frames=24, image_size=SIZE) for task in sim.SIM_TASKS}


@pytest.mark.parametrize("task", sim.SIM_TASKS)
def test_shapes_dtypes_and_bounds(episodes, task):
    episode, info = episodes[task], sim.TASK_INFO[task]
    assert episode.task == task and episode.seed == 7
    assert episode.frames.shape == (24, SIZE, SIZE, 3) and episode.frames.dtype == np.uint8
    assert episode.actions.shape == (23, len(info.action_names)) and episode.actions.dtype == np.float32
    assert episode.poses.shape == (24, len(info.pose_names)) and episode.poses.dtype == np.float32
    assert (episode.actions >= np.float32(info.action_low)).all()
    assert (episode.actions <= np.float32(info.action_high)).all()
    assert np.abs(episode.actions).max() > 0.05  # the random policy moves
    assert len(np.unique(episode.frames.reshape(24, -1), axis=0)) > 12  # and it shows


@pytest.mark.parametrize("task", sim.SIM_TASKS)
def test_same_seed_same_episode_other_seed_differs(episodes, task):
    again = sim.render_episode(task, seed=7, frames=24, image_size=SIZE)
    reference = episodes[task]
    np.testing.assert_array_equal(again.frames, reference.frames)
    np.testing.assert_array_equal(again.actions, reference.actions)
    np.testing.assert_array_equal(again.poses, reference.poses)
    other = sim.render_episode(task, seed=8, frames=24, image_size=SIZE)
    assert not np.array_equal(other.frames, reference.frames)
    assert not np.array_equal(other.actions, reference.actions)
    assert not np.array_equal(other.poses[0], reference.poses[0])


def test_nav_layout_follows_scene_seed(can_render):
    assert nav.nav_layout(0) != nav.nav_layout(1)
    a = sim.render_episode("nav", seed=1, frames=2, image_size=SIZE, scene_seed=0)
    b = sim.render_episode("nav", seed=1, frames=2, image_size=SIZE, scene_seed=1)
    assert not np.array_equal(a.frames, b.frames)


def test_integrate_nav_by_hand():
    poses = sim.integrate_nav(np.zeros(3), np.array([[1.0, math.pi / 2], [2.0, -math.pi / 2]]))
    np.testing.assert_allclose(poses, [[0, 0, 0], [0, 1, math.pi / 2], [2, 1, 0]], atol=1e-12)


def test_nav_integrating_recorded_actions_gives_recorded_poses(episodes, can_render):
    episode = episodes["nav"]
    # numpy: the simulator steps with integrate_nav in float32, so this is exact
    np.testing.assert_array_equal(sim.integrate_nav(episode.poses[0], episode.actions), episode.poses)
    other = sim.render_episode("nav", seed=9, frames=24, image_size=SIZE)
    pose0 = np.stack([episode.poses[0], other.poses[0]])
    actions = np.stack([episode.actions, other.actions])
    expected = np.stack([episode.poses, other.poses])
    np.testing.assert_array_equal(sim.integrate_nav(pose0, actions), expected)
    # torch, batched, float32 and float64
    for dtype in (torch.float32, torch.float64):
        out = sim.integrate_nav(torch.tensor(pose0, dtype=dtype), torch.tensor(actions, dtype=dtype))
        assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == (2, 24, 3)
        torch.testing.assert_close(out, torch.tensor(expected, dtype=dtype), atol=1e-4, rtol=0)
    # one start pose broadcast over candidate plans (planning)
    plans = torch.tensor(actions)
    out = sim.integrate_nav(torch.tensor(episode.poses[0]), plans)
    assert out.shape == (2, 24, 3)
    torch.testing.assert_close(out[0], torch.tensor(episode.poses), atol=1e-4, rtol=0)
    # gradients flow to the actions
    plans.requires_grad_(True)
    sim.integrate_nav(torch.zeros(3), plans)[..., -1, :2].sum().backward()
    assert plans.grad is not None and plans.grad.abs().sum() > 0


def test_nav_stays_clear_of_walls_and_obstacles(episodes):
    layout = nav.nav_layout(0)
    for x, y, _ in episodes["nav"].poses:
        assert nav.nav_clearance(layout, float(x), float(y)) >= sim.NAV_CLEARANCE


def test_nav_replay_blocks_forward_at_a_wall(can_render):
    start = sim.render_episode("nav", seed=3, frames=2, image_size=SIZE).poses[0]
    full = np.tile(np.float32([0.3, 0.0]), (60, 1))  # 18 m straight ahead: must hit something
    episode = sim.render_episode("nav", seed=3, frames=61, image_size=SIZE, actions=full)
    np.testing.assert_array_equal(episode.poses[0], start)
    assert (episode.actions[:, 0] == 0).any() and (episode.actions[:, 1] == 0).all()
    np.testing.assert_array_equal(sim.integrate_nav(episode.poses[0], episode.actions), episode.poses)


def test_reacher_end_effector_matches_mujoco(episodes):
    poses = episodes["reacher"].poses
    np.testing.assert_allclose(sim.reacher_end_effector(poses[:, 2:]), poses[:, :2], atol=1e-6)
    out = sim.reacher_end_effector(torch.tensor(poses[None, :, 2:]))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 24, 2)
    torch.testing.assert_close(out[0], torch.tensor(poses[:, :2]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(sim.reacher_end_effector(np.array([0.0, 0.0])), [0.24, 0.0], atol=1e-12)
    np.testing.assert_allclose(sim.reacher_end_effector(np.array([math.pi / 2, -math.pi / 2])), [0.12, 0.12],
                               atol=1e-12)


def test_reacher_angles_wrap_and_clip(episodes):
    q = episodes["reacher"].poses[:, 2:]
    assert (q[:, 0] >= -math.pi).all() and (q[:, 0] < math.pi).all()
    assert (np.abs(q[:, 1]) <= math.radians(160) + 1e-6).all()


def test_wrist_range_read_from_the_mjcf_is_mujocos():
    """One source of truth: the range the simulator and the planning metrics use, parsed from the
    MJCF, is exactly the one MuJoCo compiles from it (+-160 degrees)."""
    from lam_fast.envs.reacher import build_reacher
    from lam_fast.envs.render import import_mujoco

    model, _ = build_reacher(import_mujoco())
    wrist = model.joint("wrist")
    assert wrist.limited[0] and sim.reacher_wrist_range() == tuple(float(v) for v in wrist.range)
    assert sim.reacher_wrist_range() == (-math.radians(160), math.radians(160))


def test_render_unavailable_without_mujoco(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco", None)  # import mujoco now raises ModuleNotFoundError
    with pytest.raises(sim.RenderUnavailable, match="needs MuJoCo"):
        sim.generate("reacher", tmp_path, episodes=1, frames=2, image_size=SIZE)
    assert issubclass(sim.RenderUnavailable, RuntimeError)  # callers catching RuntimeError still do


def _fresh_python(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env},
                          timeout=300)


@pytest.mark.parametrize("gl", ["disable", "bogus"])
def test_render_unavailable_without_an_opengl_backend(gl):
    """No GL backend (MUJOCO_GL=disable: MuJoCo has no GLContext) or an unknown one: the dedicated
    error, naming the backend, not some RuntimeError the tests would have to skip blindly."""
    code = ("from lam_fast import envs\n"
            "try:\n"
            "    envs.render_episode('reacher', seed=0, frames=2, image_size=16)\n"
            "except envs.RenderUnavailable as error:\n"
            "    print('unavailable:', error)\n")
    out = _fresh_python(code, MUJOCO_GL=gl)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("unavailable:") and f"MUJOCO_GL={gl!r}" in out.stdout, out.stdout


def test_importing_envs_neither_imports_mujoco_nor_sets_mujoco_gl():
    """MUJOCO_GL is chosen where rendering is first set up, right before MuJoCo is imported."""
    code = ("import os, sys\n"
            "from lam_fast import envs\n"
            "from lam_fast.envs import render\n"
            "assert 'mujoco' not in sys.modules and 'MUJOCO_GL' not in os.environ\n"
            "try:\n"
            "    render.import_mujoco()\n"
            "except render.RenderUnavailable as error:  # the choice was made all the same\n"
            "    print('unavailable:', error, file=sys.stderr)\n"
            "print(os.environ['MUJOCO_GL'])\n")
    out = _fresh_python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [render.DEFAULT_MUJOCO_GL]


@pytest.mark.parametrize("task", sim.SIM_TASKS)
def test_zero_action_keeps_the_frame_a_move_changes_it(can_render, task):
    move = [0.2, -0.1] if task == "reacher" else [0.0, 0.3]  # nav: turning is never blocked
    episode = sim.render_episode(task, seed=5, frames=3, image_size=SIZE, actions=[[0.0, 0.0], move])
    np.testing.assert_array_equal(episode.frames[1], episode.frames[0])
    np.testing.assert_array_equal(episode.poses[1], episode.poses[0])
    assert not np.array_equal(episode.frames[2], episode.frames[1])
    np.testing.assert_allclose(episode.actions, [[0.0, 0.0], move], atol=1e-7)


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="task"):
        sim.render_episode("cartpole", seed=0, frames=4)
    with pytest.raises(ValueError, match="frames"):
        sim.render_episode("nav", seed=0, frames=1)
    with pytest.raises(ValueError, match="episodes"):
        sim.generate("nav", tmp_path, episodes=0, frames=4)
    with pytest.raises(ValueError, match="frames"):
        sim.generate("reacher", tmp_path, episodes=1, frames=1)
    with pytest.raises(ValueError, match="task"):
        sim.generate("walker", tmp_path, episodes=1, frames=4)
    with pytest.raises(ValueError, match="image_size"):
        sim.generate("nav", tmp_path, episodes=1, frames=4, image_size=33)
    with pytest.raises(ValueError, match="actions"):
        sim.render_episode("nav", seed=0, frames=4, actions=np.zeros((2, 2)))
    assert not any(tmp_path.iterdir())


def test_generate_writes_decodable_videos_and_resumes(tmp_path, can_render, monkeypatch):
    from lam_fast.data import VideoClipDataset, decode_clip, frame_indices

    out = tmp_path / "nav"
    videos = sim.generate("nav", out, episodes=2, frames=8, seed=3, image_size=SIZE, fps=4.0)
    assert videos == [out / "episode_00000.mp4", out / "episode_00001.mp4"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["episode_00000.mp4", "episode_00000.npz", "episode_00001.mp4", "episode_00001.npz",
                     "meta.json"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "nav" and meta["episodes"] == 2 and meta["frames"] == 8 and meta["fps"] == 4.0
    assert meta["seed"] == meta["scene_seed"] == 3 and meta["image_size"] == SIZE
    assert meta["action_names"] == ["forward", "yaw"] and meta["mujoco_version"]

    info, loaded_meta, episodes = sim.load_episodes(out)
    assert info is sim.TASK_INFO["nav"] and loaded_meta["skipped"] == [] and len(episodes) == 2
    expected = sim.render_episode("nav", seed=sim.episode_seed(3, 1), frames=8, image_size=SIZE, scene_seed=3)
    np.testing.assert_array_equal(episodes[1].frames, expected.frames)
    np.testing.assert_array_equal(episodes[1].actions, expected.actions)
    assert episodes[1].seed == expected.seed

    # the mp4 holds the T frames at fps, in order (lossy: H.264 crf 18 + yuv420p chroma)
    def frame_errors(clip: torch.Tensor, frames: np.ndarray) -> np.ndarray:
        decoded = clip.permute(0, 2, 3, 1).numpy().astype(np.float64)
        return np.abs(decoded - frames).mean(axis=(1, 2, 3))

    for video, episode in zip(videos, episodes, strict=True):
        assert frame_errors(decode_clip(video, 0.0, 8, 4.0, SIZE), episode.frames).max() < 10
    # and the normal video pipeline trains on it: T-frame clips of the episode frames at fps
    dataset = VideoClipDataset(out, num_frames=8, fps=4.0, image_size=SIZE)
    assert len(dataset.videos) == 2 and not dataset.skipped
    assert all(info.num_frames == 8 and info.fps == 4.0 for info in dataset.videos)
    for index in range(4):
        item, request = dataset[index], dataset.request(index)
        assert item is not None and item["video"].shape == (8, 3, SIZE, SIZE)
        episode = episodes[int(os.path.basename(request.info.path)[len("episode_"):-len(".mp4")])]
        chosen = frame_indices(request.info, request.start, 8, 4.0)  # the pipeline's frame rule
        assert frame_errors(item["video"], episode.frames[chosen]).max() < 10

    # re-running skips the complete episodes
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith("episode_")}
    sim.generate("nav", out, episodes=2, frames=8, seed=3, image_size=SIZE, fps=4.0)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith("episode_")} == stamps

    # an interrupted write leaves no partial file, and the next run completes the episode
    (out / "episode_00001.mp4").unlink()

    def fail(path, frames, fps):
        path.write_bytes(b"half a video")
        raise KeyboardInterrupt

    monkeypatch.setattr(episode_files, "_write_mp4", fail)
    with pytest.raises(KeyboardInterrupt):
        sim.generate("nav", out, episodes=2, frames=8, seed=3, image_size=SIZE, fps=4.0)
    assert sorted(p.name for p in out.iterdir()) == [n for n in names if n != "episode_00001.mp4"]
    monkeypatch.undo()
    sim.generate("nav", out, episodes=2, frames=8, seed=3, image_size=SIZE, fps=4.0)
    assert sorted(p.name for p in out.iterdir()) == names

    # other settings in the same folder are refused
    with pytest.raises(ValueError, match="frames"):
        sim.generate("nav", out, episodes=2, frames=9, seed=3, image_size=SIZE, fps=4.0)


def test_load_episodes_skips_a_corrupt_file(tmp_path, can_render):
    sim.generate("reacher", tmp_path, episodes=3, frames=4, image_size=SIZE)
    (tmp_path / "episode_00001.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.warns(UserWarning, match="episode_00001.npz"):
        info, meta, episodes = sim.load_episodes(tmp_path)
    assert info.name == "reacher" and meta["skipped"] == ["episode_00001.npz"] and len(episodes) == 2
    assert [e.seed for e in episodes] == [sim.episode_seed(0, 0), sim.episode_seed(0, 2)]


def test_load_episodes_needs_meta_and_a_known_task(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        sim.load_episodes(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"task": "cartpole"}))
    with pytest.raises(ValueError, match="unknown task 'cartpole'"):
        sim.load_episodes(tmp_path)


def test_cli_generate_and_info(tmp_path, can_render, capsys):
    from lam_fast.cli import main

    out = tmp_path / "cli"
    assert main(["sim", "generate", "--task", "reacher", "--episodes", "2", "--frames", "5", "--out", str(out),
                 "--seed", "1", "--image-size", str(SIZE), "--fps", "5"]) == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["episode_00000.mp4", "episode_00001.mp4"]
    assert json.loads((out / "meta.json").read_text())["fps"] == 5.0
    capsys.readouterr()
    assert main(["sim", "info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "task: reacher" in printed and "2 loaded, 0 skipped" in printed and "d_shoulder" in printed
    assert main(["sim", "generate", "--task", "reacher", "--episodes", "0", "--frames", "5", "--out", str(out)]) == 2
    assert "episodes" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_still_imports_after_rendering(tmp_path, can_render):
    """Mesa's software renderer loads its own LLVM; importing Triton after it used to segfault the
    process. In a fresh interpreter: render first, then import Triton."""
    code = ("from lam_fast import envs; import sys; "
            "envs.render_episode('reacher', seed=0, frames=2, image_size=32); "
            "import triton.runtime, triton.language; print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]

"""Action-labelled video from MuJoCo: two tasks, every episode deterministic by its seed.

The paper's world models learn from unlabelled video; to *measure* what their latent actions
capture (and to plan with them) we need video whose true actions and poses are known. This module
renders such video with MuJoCo (``mujoco==3.17.0``; the reacher model comes from
``dm_control==1.0.50``) and writes it in two forms: an H.264 ``.mp4`` per episode, which the normal
video pipeline (:class:`~lam_fast.data.dataset.VideoClipDataset`) trains on like any other video,
and an ``.npz`` with the exact frames, actions and poses for evaluation.

Conventions shared by both tasks: an episode of ``T`` frames has ``T - 1`` actions, action ``t``
takes frame ``t`` to frame ``t + 1``; the motion is applied *kinematically* (no dynamics, no
momentum), so the state after an action depends only on the state before and the action. The
recorded action is always the **executed** one (after clipping to bounds, joint limits or
collisions), so replaying the recorded actions reproduces the episode. Random policies are smooth
(AR(1): ``a_t = 0.7 a_{t-1} + noise``, clipped), so consecutive actions are correlated as in
teleoperated or driven video.

``reacher``: manipulation seen by a fixed camera
    The two-link planar arm of the dm_control ``reacher`` task, seen from its top-down ``fixed``
    camera (0.75 m above the 0.6 x 0.6 m arena; image right = world +x, image up = world +y).
    The arm's capsules and fingertip are drawn 4 cm thick (2 cm in dm_control) to be visible at
    64x64. A coloured target sphere is placed at random per episode (uniform angle, radius 5-20 cm, as
    in dm_control) and stays fixed within the episode; it never moves, so it is context, not
    state. **Actions** (2-d, radians per step, each in [-0.3, 0.3]): joint-angle deltas
    ``(d_shoulder, d_wrist)``, applied as ``q <- q + a``; the shoulder angle is then wrapped to
    [-pi, pi), the wrist angle clipped to its joint range [-160 deg, 160 deg] (the recorded wrist
    action is the executed delta). **Poses** (4-d): ``(finger_x, finger_y, q0, q1)``: the
    fingertip position in metres (MuJoCo's ``xpos`` of the ``finger`` body, world frame, arm
    base at the origin) and the two joint angles in radians. :func:`reacher_end_effector` is the
    arm's forward kinematics (``finger = L1 (cos q0, sin q0) + L2 (cos(q0 + q1), sin(q0 + q1))``,
    ``L1 = L2 = 0.12`` m read from the MJCF). **Policy**: start angles uniform (shoulder in
    [-pi, pi), wrist in its range); AR(1) actions with noise std 0.1 rad, clipped to the bounds.

``nav``: egocentric navigation
    A forward-looking camera (90 deg vertical field of view, 0.4 m above the floor) carried by a
    mocap body through an 8 x 8 m arena (``x, y`` in [-4, 4] m) with a checkered floor (0.5 m
    squares), four walls of different colours (+x red, +y green, -x blue, -y yellow, 1 m tall)
    and 12 coloured boxes and cylinders. The obstacle layout is drawn from ``scene_seed`` (the
    dataset seed in :func:`generate`) and is the same for every episode of a dataset, so a world
    model can learn the place. **Actions** (2-d): ``(forward, yaw)``: forward distance in metres
    per step in [0, 0.3] and yaw change in radians per step in [-0.4, 0.4] (counter-clockwise
    positive). **Kinematics** (unicycle, :func:`integrate_nav`, the one definition used by the
    simulator and by planners)::

        yaw_{t+1} = yaw_t + w_t
        x_{t+1}   = x_t + v_t cos(yaw_{t+1})
        y_{t+1}   = y_t + v_t sin(yaw_{t+1})

    **Poses** (3-d): ``(x, y, yaw)`` in metres and radians (yaw not wrapped: it is the running
    sum of the yaw actions; yaw 0 looks along +x). **Policy**: start pose uniform over the
    collision-free part of the arena (at least 0.5 m from everything), yaw uniform; forward speed
    AR(1) around 0.18 m/step (noise std 0.05), yaw AR(1) (noise std 0.1), plus a steer of 0.15
    rad/step towards the freer side when the point 1 m ahead is within 1 m of something. Whenever
    the next position would come within 0.4 m of a wall or an obstacle, the forward action is set
    to 0 and the agent turns on the spot (0.3 rad/step, towards the freer side) until the next
    0.6 m ahead are clear (at most one full turn): about a fifth of the steps. Replayed actions
    (``render_episode(..., actions=...)``) are blocked the same way: forward set to 0, the yaw
    kept. Poses are computed in float32 with :func:`integrate_nav`, so integrating the recorded
    actions from the first pose gives the recorded poses exactly.

Files written by :func:`generate` into ``out/``: ``episode_{i:05d}.mp4`` (H.264, crf 18, yuv420p,
at ``fps``), ``episode_{i:05d}.npz`` (``frames`` uint8 (T, H, W, 3), ``actions`` float32 (T-1, A),
``poses`` float32 (T, P), ``task``, ``seed``, ``index``) and ``meta.json`` (task, its
:class:`SimTaskInfo` fields, episodes, frames, image_size, fps, seed, scene_seed, mujoco
version). Episode ``i`` renders with the seed :func:`episode_seed` ``(seed, i)``. Command line:
``lam-fast sim generate --task reacher --episodes 100 --frames 64 --out DIR`` and
``lam-fast sim info DIR``.

Rendering runs offscreen: ``MUJOCO_GL`` defaults to ``egl`` here (set on import of this module,
so import this module before ``mujoco``); ``osmesa`` (Debian ``libosmesa6``) works too. Shadows,
reflections and multisampling are off for speed: at 64x64 on a CPU (EGL on Mesa's llvmpipe)
reacher renders ~400 frames/s and nav ~250-450 frames/s; writing the mp4 and npz adds little.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import importlib.util
import json
import math
import os
import sys
import warnings
import xml.etree.ElementTree as ElementTree
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lam_fast.io import atomic_write, write_json_atomic

# MuJoCo picks its OpenGL backend when it is imported: a process that imported it before this
# module without MUJOCO_GL gets GLFW, which needs a display.
_MUJOCO_IMPORTED_FIRST = "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ
os.environ.setdefault("MUJOCO_GL", "egl")

SIM_TASKS = ("reacher", "nav")


@dataclass(frozen=True)
class SimTaskInfo:
    """What a task's actions and poses are (see the module docstring)."""

    name: str
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    pose_names: tuple[str, ...]
    description: str


TASK_INFO: dict[str, SimTaskInfo] = {
    "reacher": SimTaskInfo(
        name="reacher",
        action_names=("d_shoulder", "d_wrist"),
        action_low=(-0.3, -0.3),
        action_high=(0.3, 0.3),
        pose_names=("finger_x", "finger_y", "q0", "q1"),
        description="dm_control two-link reacher arm seen top-down by a fixed camera; actions are "
                    "joint-angle deltas (rad/step) applied kinematically; poses are the fingertip "
                    "xy (m) and the joint angles (rad); the target sphere is fixed per episode",
    ),
    "nav": SimTaskInfo(
        name="nav",
        action_names=("forward", "yaw"),
        action_low=(0.0, -0.4),
        action_high=(0.3, 0.4),
        pose_names=("x", "y", "yaw"),
        description="egocentric camera (0.4 m high, fovy 90) in an 8x8 m arena with coloured walls "
                    "and 12 obstacles fixed per dataset; actions are (forward m/step, yaw rad/step) "
                    "with unicycle kinematics; poses are (x m, y m, yaw rad)",
    ),
}


@dataclass
class SimEpisode:
    """One rendered episode: action ``t`` takes ``frames[t]`` to ``frames[t + 1]``."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    actions: np.ndarray  # (T-1, A) float32, executed actions
    poses: np.ndarray  # (T, P) float32
    task: str
    seed: int


# Random policies: AR(1) coefficient and the tasks' constants (see the module docstring).
_AR = 0.7
_REACHER_NOISE = 0.1
_REACHER_THICKNESS = 0.02  # radius of the arm's capsules and fingertip sphere (dm_control: 0.01)
_NAV_SPEED_MEAN, _NAV_SPEED_NOISE, _NAV_YAW_NOISE, _NAV_TURN = 0.18, 0.05, 0.1, 0.3
_NAV_PROBE, _NAV_PROBE_ANGLE, _NAV_STEER = 1.0, 0.6, 0.15  # obstacle-avoiding steer (see _NavSim)
ARENA_HALF = 4.0  # nav arena: x, y in [-ARENA_HALF, ARENA_HALF] metres
NAV_CLEARANCE = 0.4  # nav: the agent never comes closer than this to a wall or obstacle (m)
NAV_CAMERA_HEIGHT = 0.4
_NAV_OBSTACLES = 12
_GL_HELP = ("MuJoCo offscreen rendering needs EGL (libEGL, MUJOCO_GL=egl) or OSMesa "
            "(Debian libosmesa6, MUJOCO_GL=osmesa)")


def _validate_task(task: str) -> SimTaskInfo:
    if task not in TASK_INFO:
        raise ValueError(f"task must be one of {SIM_TASKS}, got {task!r}")
    return TASK_INFO[task]


def _validate_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _mujoco():
    """Import MuJoCo, turning a broken OpenGL setup into an error that says what is needed."""
    # Mesa's software renderer (EGL/OSMesa on a CPU) loads its own LLVM; Triton bundles another.
    # Importing Triton *after* Mesa's LLVM is loaded segfaults (measured with triton 3.9 and Mesa
    # llvmpipe); the other order works. So load Triton's native library first when it is installed:
    # a process that renders sim video can still run the Triton kernels afterwards.
    if importlib.util.find_spec("triton") is not None:
        import triton.runtime  # noqa: F401
    try:
        import mujoco
    except ModuleNotFoundError as error:
        if error.name != "mujoco":
            raise
        raise RuntimeError("lam_fast.data.sim needs MuJoCo: pip install mujoco==3.17.0 "
                           "dm_control==1.0.50 (the 'sim' extra)") from error
    except (ImportError, AttributeError, RuntimeError, OSError) as error:
        raise RuntimeError(f"cannot import mujoco with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} "
                           f"({type(error).__name__}: {error}); {_GL_HELP}") from error
    return mujoco


# --------------------------------------------------------------------------------------- reacher


def _reacher_mjcf() -> tuple[str, dict[str, bytes]]:
    """The dm_control reacher MJCF and its include files, read from the installed package.

    Read as files rather than through ``dm_control.suite`` so that no OpenGL binding is touched
    (importing dm_control's MuJoCo wrapper initialises one).
    """
    spec = importlib.util.find_spec("dm_control")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the reacher task needs dm_control: pip install dm_control==1.0.50 "
                           "mujoco==3.17.0 (the 'sim' extra)")
    suite = Path(next(iter(spec.submodule_search_locations))) / "suite"
    xml = (suite / "reacher.xml").read_text(encoding="utf-8")
    assets = {f"./common/{path.name}": path.read_bytes()
              for path in sorted((suite / "common").glob("*.xml"))}
    return xml, assets


@functools.lru_cache(maxsize=1)
def _reacher_links() -> tuple[float, float, float, float]:
    """``(base_x, base_y, L1, L2)`` of the reacher arm, read from its MJCF once.

    The shoulder is the ``arm`` body's position, ``L1`` the ``hand`` body's offset in the arm
    frame and ``L2`` the ``finger`` body's offset in the hand frame (both along the body's x axis
    in the dm_control model; checked against MuJoCo's ``xpos`` by the tests).
    """
    root = ElementTree.fromstring(_reacher_mjcf()[0])
    positions = {}
    for body in root.iter("body"):
        positions[body.get("name")] = [float(v) for v in body.get("pos", "0 0 0").split()]
    arm, hand, finger = positions["arm"], positions["hand"], positions["finger"]
    if abs(hand[1]) > 0 or abs(finger[1]) > 0:
        raise RuntimeError("unexpected reacher MJCF: link offsets are not along the x axis")
    return arm[0], arm[1], hand[0], finger[0]


def reacher_end_effector(q: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Forward kinematics of the reacher arm: joint angles ``(..., 2)`` -> fingertip xy ``(..., 2)``.

    ``finger = base + L1 (cos q0, sin q0) + L2 (cos(q0 + q1), sin(q0 + q1))`` in metres, with the
    link lengths read from the MJCF. Takes and returns numpy arrays or torch tensors (any batch
    shape, differentiable in torch); needs no MuJoCo.
    """
    base_x, base_y, first, second = _reacher_links()
    if isinstance(q, torch.Tensor):
        cos, sin, stack = torch.cos, torch.sin, torch.stack
    else:
        q = np.asarray(q)
        if not np.issubdtype(q.dtype, np.floating):
            q = q.astype(np.float64)
        cos, sin, stack = np.cos, np.sin, np.stack
    if q.shape[-1:] != (2,):
        raise ValueError(f"q must have shape (..., 2) (shoulder, wrist angles), got {tuple(q.shape)}")
    q0, q1 = q[..., 0], q[..., 1]
    x = base_x + first * cos(q0) + second * cos(q0 + q1)
    y = base_y + first * sin(q0) + second * sin(q0 + q1)
    return stack([x, y], -1)


# ------------------------------------------------------------------------------------------- nav


def integrate_nav(pose0: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor
                  ) -> np.ndarray | torch.Tensor:
    """Unicycle kinematics of the nav task: poses from a start pose and (forward, yaw) actions.

    ``yaw_{t+1} = yaw_t + w_t``, ``x_{t+1} = x_t + v_t cos(yaw_{t+1})``,
    ``y_{t+1} = y_t + v_t sin(yaw_{t+1})``: the single definition, used by the simulator and by
    planners turning planned actions into trajectories. Actions are used as given (not clipped).

    Args:
        pose0: ``(..., 3)`` start pose ``(x, y, yaw)``.
        actions: ``(..., H, 2)`` actions ``(v, w)``; the batch dims broadcast with ``pose0``'s
            (e.g. one start pose for ``(N, H, 2)`` candidate plans).

    Returns:
        ``(..., H + 1, 3)`` poses, the first being ``pose0``: a torch tensor if either input is
        one (differentiable), else a numpy array (float32 stays float32).
    """
    if isinstance(pose0, torch.Tensor) or isinstance(actions, torch.Tensor):
        like = pose0 if isinstance(pose0, torch.Tensor) else actions
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        pose0 = torch.as_tensor(pose0, dtype=dtype, device=like.device)
        actions = torch.as_tensor(actions, dtype=dtype, device=like.device)
        cos, sin, stack = torch.cos, torch.sin, torch.stack
        batch = torch.broadcast_shapes(pose0.shape[:-1], actions.shape[:-2])
        expand = lambda value: value.expand(batch)  # noqa: E731
    else:
        pose0, actions = np.asarray(pose0), np.asarray(actions)
        dtype = np.result_type(pose0.dtype, actions.dtype, np.float32)
        pose0, actions = pose0.astype(dtype, copy=False), actions.astype(dtype, copy=False)
        cos, sin, stack = np.cos, np.sin, np.stack
        batch = np.broadcast_shapes(pose0.shape[:-1], actions.shape[:-2])
        expand = lambda value: np.broadcast_to(value, batch)  # noqa: E731
    if pose0.shape[-1:] != (3,):
        raise ValueError(f"pose0 must have shape (..., 3) (x, y, yaw), got {tuple(pose0.shape)}")
    if actions.ndim < 2 or actions.shape[-1] != 2:
        raise ValueError(f"actions must have shape (..., H, 2) (forward, yaw), got {tuple(actions.shape)}")
    x, y, yaw = expand(pose0[..., 0]), expand(pose0[..., 1]), expand(pose0[..., 2])
    poses = [stack([x, y, yaw], -1)]
    for t in range(actions.shape[-2]):
        v, w = actions[..., t, 0], actions[..., t, 1]
        yaw = yaw + w
        x = x + v * cos(yaw)
        y = y + v * sin(yaw)
        poses.append(stack([x, y, yaw], -1))
    return stack(poses, -2)


@dataclass(frozen=True)
class _Obstacle:
    kind: str  # "box" or "cylinder"
    x: float
    y: float
    yaw: float
    half: tuple[float, float]  # box half extents along its own x, y; cylinder (radius, radius)
    height: float
    rgb: tuple[float, float, float]

    @property
    def radius(self) -> float:
        """Radius of the footprint's bounding circle."""
        return math.hypot(*self.half) if self.kind == "box" else self.half[0]


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return tuple(round(c, 3) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


@functools.lru_cache(maxsize=8)
def _nav_layout(scene_seed: int) -> tuple[_Obstacle, ...]:
    """The 12 obstacles of the nav arena for ``scene_seed``: spaced so the agent can pass between."""
    rng = np.random.default_rng([scene_seed, 0x6E6176])  # "nav"
    hues = (np.arange(_NAV_OBSTACLES) + rng.random()) / _NAV_OBSTACLES
    rng.shuffle(hues)
    gap = 2 * NAV_CLEARANCE + 0.15  # room for the agent between two obstacles / a wall
    placed: list[_Obstacle] = []
    for attempt in range(100_000):
        kind = "box" if rng.random() < 0.5 else "cylinder"
        if kind == "box":
            half = (float(rng.uniform(0.15, 0.4)), float(rng.uniform(0.15, 0.4)))
        else:
            radius = float(rng.uniform(0.15, 0.35))
            half = (radius, radius)
        index = len(placed)
        candidate = _Obstacle(
            kind=kind, x=float(rng.uniform(-ARENA_HALF, ARENA_HALF)),
            y=float(rng.uniform(-ARENA_HALF, ARENA_HALF)), yaw=float(rng.uniform(0, math.pi)),
            half=half, height=float(rng.uniform(0.3, 1.2)),
            rgb=_hsv_to_rgb(float(hues[index]), float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.6, 0.95))),
        )
        limit = ARENA_HALF - candidate.radius - gap
        if abs(candidate.x) > limit or abs(candidate.y) > limit:
            continue
        if all(math.hypot(candidate.x - o.x, candidate.y - o.y) >= candidate.radius + o.radius + gap
               for o in placed):
            placed.append(candidate)
            if len(placed) == _NAV_OBSTACLES:
                return tuple(placed)
    raise RuntimeError(f"could not place {_NAV_OBSTACLES} nav obstacles for scene_seed={scene_seed}")


_WALLS = (  # name, centre x, centre y, half x, half y, rgb
    ("wall_px", ARENA_HALF + 0.1, 0.0, 0.1, ARENA_HALF + 0.2, (0.8, 0.22, 0.18)),
    ("wall_py", 0.0, ARENA_HALF + 0.1, ARENA_HALF + 0.2, 0.1, (0.2, 0.62, 0.25)),
    ("wall_nx", -ARENA_HALF - 0.1, 0.0, 0.1, ARENA_HALF + 0.2, (0.2, 0.35, 0.82)),
    ("wall_ny", 0.0, -ARENA_HALF - 0.1, ARENA_HALF + 0.2, 0.1, (0.92, 0.8, 0.2)),
)


def _nav_mjcf(scene_seed: int) -> str:
    """The nav arena as an MJCF string (walls, checkered floor, obstacles, mocap camera body)."""
    def rgba(rgb):
        return " ".join(f"{c:.3f}" for c in rgb) + " 1"

    geoms = []
    for name, x, y, hx, hy, rgb in _WALLS:
        geoms.append(f'<geom name="{name}" type="box" pos="{x} {y} 0.5" size="{hx} {hy} 0.5" '
                     f'rgba="{rgba(rgb)}"/>')
    for i, o in enumerate(_nav_layout(scene_seed)):
        half_height = o.height / 2
        if o.kind == "box":
            size = f"{o.half[0]:.4f} {o.half[1]:.4f} {half_height:.4f}"
        else:
            size = f"{o.half[0]:.4f} {half_height:.4f}"
        geoms.append(f'<geom name="obstacle_{i}" type="{o.kind}" pos="{o.x:.4f} {o.y:.4f} '
                     f'{half_height:.4f}" euler="0 0 {o.yaw:.4f}" size="{size}" rgba="{rgba(o.rgb)}"/>')
    body = "\n    ".join(geoms)
    return f"""<mujoco model="lam_fast nav arena">
  <compiler angle="radian"/>
  <visual>
    <headlight ambient=".45 .45 .45" diffuse=".5 .5 .5" specular="0 0 0"/>
    <quality shadowsize="0" offsamples="0"/>
    <map znear="0.005" zfar="40"/>
  </visual>
  <statistic extent="10" center="0 0 0.5"/>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".62 .76 .92" rgb2=".95 .95 .97"
             width="64" height="64"/>
    <texture name="floor" type="2d" builtin="checker" rgb1=".78 .76 .7" rgb2=".38 .37 .35"
             width="64" height="64"/>
    <material name="floor" texture="floor" texrepeat="2 2" texuniform="true"/>
  </asset>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 6" dir="-.4 -.25 -1" castshadow="false"
           diffuse=".45 .45 .45"/>
    <geom name="floor" type="plane" size="{ARENA_HALF + 0.2} {ARENA_HALF + 0.2} .1" material="floor"/>
    {body}
    <body name="agent" mocap="true">
      <camera name="ego" pos="0 0 {NAV_CAMERA_HEIGHT}" xyaxes="0 -1 0 0 0 1" fovy="90"/>
    </body>
  </worldbody>
</mujoco>
"""


def _nav_clearance(layout: Sequence[_Obstacle], x: float, y: float) -> float:
    """Distance (m) from the point (x, y) to the nearest wall face or obstacle footprint."""
    nearest = ARENA_HALF - max(abs(x), abs(y))
    for o in layout:
        dx, dy = x - o.x, y - o.y
        if o.kind == "cylinder":
            distance = math.hypot(dx, dy) - o.half[0]
        else:
            c, s = math.cos(o.yaw), math.sin(o.yaw)
            local_x, local_y = c * dx + s * dy, -s * dx + c * dy
            distance = math.hypot(max(abs(local_x) - o.half[0], 0.0), max(abs(local_y) - o.half[1], 0.0))
        nearest = min(nearest, distance)
    return nearest


# ------------------------------------------------------------------------------------- rendering


class _Scene:
    """A compiled model, its data and an offscreen renderer (cached per task, size, layout)."""

    def __init__(self, task: str, image_size: int, scene_seed: int) -> None:
        mujoco = _mujoco()
        self.mujoco = mujoco
        if task == "reacher":
            xml, assets = _reacher_mjcf()
            self.model = mujoco.MjModel.from_xml_string(xml, assets)
            self.camera = "fixed"
            # The arm is 2 cm thick in dm_control: ~1 pixel at 64x64. Draw it twice as thick
            # (looks only: no collisions, kinematic motion).
            for name in ("arm", "hand", "finger"):
                self.model.geom(name).size[0] = _REACHER_THICKNESS
        else:
            self.model = mujoco.MjModel.from_xml_string(_nav_mjcf(scene_seed))
            self.camera = "ego"
        # No multisampling, shadows or reflections: several times faster on a software renderer.
        self.model.vis.quality.offsamples = 0
        self.model.light_castshadow[:] = 0
        self.model.mat_reflectance[:] = 0
        self.data = mujoco.MjData(self.model)
        try:
            self.renderer = mujoco.Renderer(self.model, image_size, image_size)
        except Exception as error:  # GL errors come in many types (EGLError, GLError, ...)
            first = (" (mujoco was imported before lam_fast.data.sim, without MUJOCO_GL: its default "
                     "backend was used; set MUJOCO_GL=egl in the environment or import lam_fast.data.sim "
                     "first)") if _MUJOCO_IMPORTED_FIRST else ""
            raise RuntimeError(
                f"cannot create a MuJoCo renderer with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}{first} "
                f"({type(error).__name__}: {error}); {_GL_HELP}"
            ) from error

    def render(self, out: np.ndarray) -> None:
        self.mujoco.mj_forward(self.model, self.data)
        self.renderer.update_scene(self.data, camera=self.camera)
        self.renderer.render(out=out)

    def close(self) -> None:
        self.renderer.close()


_SCENES: dict[tuple[str, int, int], _Scene] = {}


def _close_scenes() -> None:
    """Free the GL contexts before interpreter teardown (avoids EGL errors printed at exit)."""
    while _SCENES:
        _, scene = _SCENES.popitem()
        try:
            scene.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _scene(task: str, image_size: int, scene_seed: int) -> _Scene:
    key = (task, image_size, scene_seed if task == "nav" else 0)
    if key not in _SCENES:
        _SCENES[key] = _Scene(task, image_size, scene_seed)
        # (Re-)registered after MuJoCo's import registered its EGL exit handler: runs before it.
        atexit.unregister(_close_scenes)
        atexit.register(_close_scenes)
    return _SCENES[key]


class _ReacherSim:
    def __init__(self, scene: _Scene, rng: np.random.Generator) -> None:
        self.scene, self.rng = scene, rng
        model, mujoco = scene.model, scene.mujoco
        wrist = model.joint("wrist")
        self.wrist_range = (float(wrist.range[0]), float(wrist.range[1])) if wrist.limited[0] else None
        low = self.wrist_range[0] if self.wrist_range else -math.pi
        high = self.wrist_range[1] if self.wrist_range else math.pi
        mujoco.mj_resetData(model, scene.data)
        self.q = np.array([rng.uniform(-math.pi, math.pi), rng.uniform(low, high)])
        angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.20)
        model.geom("target").pos[:2] = (radius * math.cos(angle), radius * math.sin(angle))
        self.finger = model.body("finger").id
        self.previous = np.zeros(2)
        self.low, self.high = np.array(TASK_INFO["reacher"].action_low), np.array(TASK_INFO["reacher"].action_high)

    def propose(self) -> np.ndarray:
        noise = self.rng.normal(0.0, _REACHER_NOISE, size=2)
        return _AR * self.previous + noise

    def execute(self, action: np.ndarray) -> np.ndarray:
        action = np.clip(np.asarray(action, np.float64), self.low, self.high)
        q0 = (self.q[0] + action[0] + math.pi) % (2 * math.pi) - math.pi
        q1 = self.q[1] + action[1]
        if self.wrist_range is not None:
            q1 = min(max(q1, self.wrist_range[0]), self.wrist_range[1])
        executed = np.array([action[0], q1 - self.q[1]])
        self.q = np.array([q0, q1])
        self.previous = executed
        return executed.astype(np.float32)

    def render(self, out: np.ndarray) -> np.ndarray:
        self.scene.data.qpos[:2] = self.q
        self.scene.render(out)
        finger = self.scene.data.xpos[self.finger]
        return np.array([finger[0], finger[1], self.q[0], self.q[1]], np.float32)


class _NavSim:
    def __init__(self, scene: _Scene, scene_seed: int, rng: np.random.Generator) -> None:
        self.scene, self.rng = scene, rng
        self.layout = _nav_layout(scene_seed)
        scene.mujoco.mj_resetData(scene.model, scene.data)
        while True:  # collision-free start with a margin
            x, y = rng.uniform(-ARENA_HALF, ARENA_HALF, size=2)
            if _nav_clearance(self.layout, x, y) >= NAV_CLEARANCE + 0.1:
                break
        self.pose = np.array([x, y, rng.uniform(-math.pi, math.pi)], np.float32)
        self.previous = np.array([_NAV_SPEED_MEAN, 0.0])
        self.escape, self.escape_steps = 0.0, 0  # turning direction while escaping a block
        info = TASK_INFO["nav"]
        self.low, self.high = np.array(info.action_low), np.array(info.action_high)

    def _free(self, angle: float, distance: float) -> float:
        """Clearance of the point ``distance`` ahead of the agent, ``angle`` off its heading."""
        x, y, yaw = (float(v) for v in self.pose)
        return _nav_clearance(self.layout, x + distance * math.cos(yaw + angle),
                              y + distance * math.sin(yaw + angle))

    def _heading_clear(self) -> bool:
        return all(self._free(0.0, d) >= NAV_CLEARANCE + 0.05 for d in (0.3, 0.6))

    def propose(self) -> np.ndarray:
        noise = self.rng.normal(size=2) * (_NAV_SPEED_NOISE, _NAV_YAW_NOISE)  # drawn every step
        if self.escape:
            # Turning on the spot after a block: until the way ahead is clear (or a full turn).
            self.escape_steps += 1
            if not self._heading_clear() and self.escape_steps * _NAV_TURN < 2 * math.pi:
                return np.array([0.0, self.escape * _NAV_TURN])
            self.escape, self.previous = 0.0, np.array([_NAV_SPEED_MEAN, 0.0])
        proposal = _AR * self.previous + (1 - _AR) * np.array([_NAV_SPEED_MEAN, 0.0]) + noise
        # Steer towards the freer side when something is close ahead (fewer blocks).
        if self._free(0.0, _NAV_PROBE) < _NAV_PROBE:
            left, right = self._free(_NAV_PROBE_ANGLE, _NAV_PROBE), self._free(-_NAV_PROBE_ANGLE, _NAV_PROBE)
            proposal[1] += _NAV_STEER if left >= right else -_NAV_STEER
        return proposal

    def execute(self, action: np.ndarray, *, turn_when_blocked: bool) -> np.ndarray:
        action = np.clip(np.asarray(action, np.float64), self.low, self.high).astype(np.float32)
        nxt = integrate_nav(self.pose, action[None])[-1]
        if _nav_clearance(self.layout, float(nxt[0]), float(nxt[1])) < NAV_CLEARANCE:
            turn = action[1]
            if turn_when_blocked:
                if not self.escape:  # turn towards the freer side
                    left, right = self._free(1.2, _NAV_PROBE), self._free(-1.2, _NAV_PROBE)
                    self.escape, self.escape_steps = (1.0 if left >= right else -1.0), 0
                turn = self.escape * _NAV_TURN
            action = np.array([0.0, turn], np.float32)
            nxt = integrate_nav(self.pose, action[None])[-1]
        self.pose = nxt
        self.previous = action.astype(np.float64)
        return action

    def render(self, out: np.ndarray) -> np.ndarray:
        x, y, yaw = (float(v) for v in self.pose)
        data = self.scene.data
        data.mocap_pos[0] = (x, y, 0.0)
        data.mocap_quat[0] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        self.scene.render(out)
        return self.pose.copy()


def render_episode(task: str, *, seed: int, frames: int, image_size: int = 64, scene_seed: int = 0,
                   actions: np.ndarray | None = None) -> SimEpisode:
    """Render one episode of ``task`` (see the module docstring): same arguments, same episode.

    Args:
        task: ``"reacher"`` or ``"nav"``.
        seed: episode seed (>= 0): start pose, target (reacher) and the random policy.
        frames: T, frames to render (>= 2).
        image_size: square image side in pixels (>= 8).
        scene_seed: nav obstacle layout (ignored by reacher).
        actions: optional ``(T - 1, A)`` actions to replay instead of the random policy (clipped
            to the bounds; nav blocks the forward part at obstacles); the start pose still comes
            from ``seed``. The episode records the executed actions.

    Returns:
        A :class:`SimEpisode` (frames uint8 (T, S, S, 3), actions float32 (T-1, A), poses float32
        (T, P)).
    """
    info = _validate_task(task)
    seed = _validate_int("seed", seed, 0)
    frames = _validate_int("frames", frames, 2)
    image_size = _validate_int("image_size", image_size, 8)
    scene_seed = _validate_int("scene_seed", scene_seed, 0)
    if actions is not None:
        actions = np.asarray(actions, np.float64)
        if actions.shape != (frames - 1, len(info.action_names)):
            raise ValueError(f"actions must have shape (frames - 1, {len(info.action_names)}) = "
                             f"({frames - 1}, {len(info.action_names)}), got {actions.shape}")
    scene = _scene(task, image_size, scene_seed)
    rng = np.random.default_rng(seed)
    sim = _ReacherSim(scene, rng) if task == "reacher" else _NavSim(scene, scene_seed, rng)
    images = np.empty((frames, image_size, image_size, 3), np.uint8)
    executed = np.empty((frames - 1, len(info.action_names)), np.float32)
    poses = np.empty((frames, len(info.pose_names)), np.float32)
    poses[0] = sim.render(images[0])
    for t in range(frames - 1):
        proposed = sim.propose() if actions is None else actions[t]
        if task == "nav":
            executed[t] = sim.execute(proposed, turn_when_blocked=actions is None)
        else:
            executed[t] = sim.execute(proposed)
        poses[t + 1] = sim.render(images[t + 1])
    return SimEpisode(frames=images, actions=executed, poses=poses, task=task, seed=seed)


# ------------------------------------------------------------------------------------ dataset io


def episode_seed(seed: int, index: int) -> int:
    """The render seed of episode ``index`` of a dataset generated with ``seed`` (63 bits)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as H.264 (crf 18, yuv420p) at ``fps`` into ``path``."""
    import av

    rate = Fraction(fps).limit_denominator(100_000)
    height, width = frames.shape[1:3]
    with av.open(os.fspath(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = k
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_npz(path: Path, episode: SimEpisode, index: int) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(handle, frames=episode.frames, actions=episode.actions, poses=episode.poses,
                            task=np.array(episode.task), seed=np.array(episode.seed, np.int64),
                            index=np.array(index, np.int64))


_META_KEYS = ("task", "frames", "image_size", "fps", "seed", "scene_seed")


def generate(task: str, out: str | Path, *, episodes: int, frames: int, seed: int = 0, image_size: int = 64,
             fps: float = 4.0, progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Render ``episodes`` episodes of ``task`` into ``out`` (see the module docstring for the files).

    Episode ``i`` uses the seed :func:`episode_seed` ``(seed, i)`` and the nav layout
    ``scene_seed = seed``. Every file is written atomically; episodes whose ``.npz`` and ``.mp4``
    both exist are skipped, so an interrupted run is resumed by running it again. A folder whose
    ``meta.json`` records other settings (task, frames, image_size, fps, seed) is refused.

    Args:
        task: ``"reacher"`` or ``"nav"``.
        out: output folder (created).
        episodes: number of episodes (>= 1).
        frames: frames per episode (>= 2).
        seed: dataset seed (>= 0).
        image_size: square frame side in pixels (even, >= 16: H.264 in yuv420p needs even sides).
        fps: frame rate written into the videos (> 0).
        progress: optional ``progress(done, episodes)`` callback after each episode.

    Returns:
        The ``.mp4`` paths of episodes ``0 .. episodes - 1``.
    """
    info = _validate_task(task)
    episodes = _validate_int("episodes", episodes, 1)
    frames = _validate_int("frames", frames, 2)
    seed = _validate_int("seed", seed, 0)
    image_size = _validate_int("image_size", image_size, 16)
    if image_size % 2:
        raise ValueError(f"image_size must be even (H.264 yuv420p), got {image_size}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    mujoco = _mujoco()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**asdict(info), "task": task, "episodes": episodes, "frames": frames, "image_size": image_size,
            "fps": float(fps), "seed": seed, "scene_seed": seed, "mujoco_version": mujoco.__version__}
    meta_path = out / "meta.json"
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{meta_path}: unreadable meta.json ({error}); remove it or use another "
                             "folder") from error
        differing = {key: (old.get(key), meta[key]) for key in _META_KEYS if old.get(key) != meta[key]}
        if differing:
            shown = ", ".join(f"{key}: {was!r} there, {now!r} asked" for key, (was, now) in differing.items())
            raise ValueError(f"{out} holds a sim dataset with other settings ({shown}); use another folder")
        meta["episodes"] = max(episodes, int(old.get("episodes", 0)))
    write_json_atomic(meta_path, meta, indent=2)
    videos = []
    for index in range(episodes):
        npz, mp4 = out / f"episode_{index:05d}.npz", out / f"episode_{index:05d}.mp4"
        if not (npz.is_file() and mp4.is_file()):
            episode = render_episode(task, seed=episode_seed(seed, index), frames=frames,
                                     image_size=image_size, scene_seed=seed)
            atomic_write(npz, lambda path: _write_npz(path, episode, index))
            atomic_write(mp4, lambda path: _write_mp4(path, episode.frames, fps))
        videos.append(mp4)
        if progress is not None:
            progress(index + 1, episodes)
    return videos


_NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile, zlib.error)


def load_episodes(directory: str | Path) -> tuple[SimTaskInfo, dict, list[SimEpisode]]:
    """Load a folder written by :func:`generate`: ``(task info, meta dict, episodes)``.

    Episodes come from every ``episode_*.npz`` in name order. A file that cannot be read or has
    inconsistent arrays is skipped with a warning; the meta dict lists their names in
    ``meta["skipped"]``.

    Raises:
        FileNotFoundError: no ``meta.json`` in ``directory``.
        ValueError: ``meta.json`` unreadable or naming an unknown task.
    """
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} does not exist: {directory} is not a sim dataset written "
                                "by lam_fast.data.sim.generate (lam-fast sim generate)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{meta_path}: unreadable meta.json ({error})") from error
    task = meta.get("task") if isinstance(meta, dict) else None
    if task not in TASK_INFO:
        raise ValueError(f"{meta_path}: unknown task {task!r} (known: {', '.join(SIM_TASKS)})")
    info = TASK_INFO[task]
    episodes, skipped = [], []
    for path in sorted(directory.glob("episode_*.npz")):
        try:
            with np.load(path) as archive:
                frames, actions, poses = archive["frames"], archive["actions"], archive["poses"]
                seed = int(archive["seed"]) if "seed" in archive.files else -1
            count = frames.shape[0] if frames.ndim == 4 else -1
            if (frames.dtype != np.uint8 or count < 2 or frames.shape[-1] != 3
                    or actions.shape != (count - 1, len(info.action_names))
                    or poses.shape != (count, len(info.pose_names))):
                raise ValueError(f"inconsistent arrays: frames {frames.shape} {frames.dtype}, "
                                 f"actions {actions.shape}, poses {poses.shape}")
        except _NPZ_ERRORS as error:
            skipped.append(path.name)
            warnings.warn(f"load_episodes skips {path}: {type(error).__name__}: {error}", stacklevel=2)
            continue
        episodes.append(SimEpisode(frames=frames, actions=actions.astype(np.float32, copy=False),
                                   poses=poses.astype(np.float32, copy=False), task=task, seed=seed))
    meta["skipped"] = skipped
    return info, meta, episodes


# ------------------------------------------------------------------------------------------- cli


def _info(directory: str) -> int:
    info, meta, episodes = load_episodes(directory)
    counts = sorted({len(e.frames) for e in episodes})
    print(f"task: {info.name} ({info.description})")
    print(f"episodes: {len(episodes)} loaded, {len(meta['skipped'])} skipped"
          + (f" ({', '.join(meta['skipped'])})" if meta["skipped"] else ""))
    print(f"frames per episode: {', '.join(map(str, counts)) or '-'}; image size {meta.get('image_size')}; "
          f"fps {meta.get('fps')}; seed {meta.get('seed')}; mujoco {meta.get('mujoco_version')}")
    if not episodes:
        return 1
    actions = np.concatenate([e.actions for e in episodes]).astype(np.float64)
    poses = np.concatenate([e.poses for e in episodes]).astype(np.float64)
    print(f"actions: {len(actions)}")
    for k, name in enumerate(info.action_names):
        column = actions[:, k]
        print(f"  {name:10s} mean {column.mean():+.4f}  std {column.std():.4f}  min {column.min():+.4f}  "
              f"max {column.max():+.4f}  bounds [{info.action_low[k]}, {info.action_high[k]}]")
    print("poses:")
    for k, name in enumerate(info.pose_names):
        column = poses[:, k]
        print(f"  {name:10s} min {column.min():+.4f}  max {column.max():+.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``lam-fast sim generate ...`` / ``lam-fast sim info DIR`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="lam-fast sim",
                                     description="action-labelled MuJoCo video (reacher, nav)")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("generate", help="render episodes into a folder (mp4 + npz + meta.json)")
    make.add_argument("--task", required=True, choices=SIM_TASKS)
    make.add_argument("--episodes", type=int, required=True)
    make.add_argument("--frames", type=int, required=True, help="frames per episode")
    make.add_argument("--out", required=True, help="output folder")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--image-size", type=int, default=64)
    make.add_argument("--fps", type=float, default=4.0)
    show = sub.add_parser("info", help="task, counts and action statistics of a generated folder")
    show.add_argument("directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            return _info(args.directory)

        def report(done: int, total: int) -> None:
            if done == total or done % max(1, total // 10) == 0:
                print(f"{done}/{total} episodes", file=sys.stderr)

        videos = generate(args.task, args.out, episodes=args.episodes, frames=args.frames, seed=args.seed,
                          image_size=args.image_size, fps=args.fps, progress=report)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"lam-fast sim: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(videos)} episodes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``nav``: egocentric navigation.

A forward-looking camera (90 deg vertical field of view, 0.4 m above the floor) carried by a mocap
body through an 8 x 8 m arena (``x, y`` in [-4, 4] m) with a checkered floor (0.5 m squares), four
walls of different colours (+x red, +y green, -x blue, -y yellow, 1 m tall) and 12 coloured boxes
and cylinders. The obstacle layout is drawn from ``scene_seed`` (the dataset seed in
:func:`~lam_fast.envs.generate`) and is the same for every episode of a dataset, so a world model
can learn the place. **Actions** (2-d): ``(forward, yaw)``: forward distance in metres per step in
[0, 0.3] and yaw change in radians per step in [-0.4, 0.4] (counter-clockwise positive).
**Kinematics** (unicycle, :func:`integrate_nav`, the one definition used by the simulator and by
planners)::

    yaw_{t+1} = yaw_t + w_t
    x_{t+1}   = x_t + v_t cos(yaw_{t+1})
    y_{t+1}   = y_t + v_t sin(yaw_{t+1})

**Poses** (3-d): ``(x, y, yaw)`` in metres and radians (yaw not wrapped: it is the running sum of
the yaw actions; yaw 0 looks along +x). **Policy**: start pose uniform over the collision-free part
of the arena (at least 0.5 m from everything), yaw uniform; forward speed AR(1) around 0.18 m/step
(noise std 0.05), yaw AR(1) (noise std 0.1), plus a steer of 0.15 rad/step towards the freer side
when the point 1 m ahead is within 1 m of something. Whenever the next position would come within
0.4 m of a wall or an obstacle, the forward action is set to 0 and the agent turns on the spot
(0.3 rad/step, towards the freer side) until the next 0.6 m ahead are clear (at most one full
turn): about a fifth of the steps. Replayed actions (``render_episode(..., actions=...)``) are
blocked the same way: forward set to 0, the yaw kept. Poses are computed in float32 with
:func:`integrate_nav`, so integrating the recorded actions from the first pose gives the recorded
poses exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lam_fast.envs.render import Scene
from lam_fast.envs.tasks import AR, TASK_INFO

_SPEED_MEAN, _SPEED_NOISE, _YAW_NOISE, _TURN = 0.18, 0.05, 0.1, 0.3
_PROBE, _PROBE_ANGLE, _STEER = 1.0, 0.6, 0.15  # obstacle-avoiding steer (see NavSim)
ARENA_HALF = 4.0  # nav arena: x, y in [-ARENA_HALF, ARENA_HALF] metres
NAV_CLEARANCE = 0.4  # nav: the agent never comes closer than this to a wall or obstacle (m)
NAV_CAMERA_HEIGHT = 0.4
_OBSTACLES = 12


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
def nav_layout(scene_seed: int) -> tuple[_Obstacle, ...]:
    """The 12 obstacles of the nav arena for ``scene_seed``: spaced so the agent can pass between."""
    rng = np.random.default_rng([scene_seed, 0x6E6176])  # "nav"
    hues = (np.arange(_OBSTACLES) + rng.random()) / _OBSTACLES
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
            if len(placed) == _OBSTACLES:
                return tuple(placed)
    raise RuntimeError(f"could not place {_OBSTACLES} nav obstacles for scene_seed={scene_seed}")


_WALLS = (  # name, centre x, centre y, half x, half y, rgb
    ("wall_px", ARENA_HALF + 0.1, 0.0, 0.1, ARENA_HALF + 0.2, (0.8, 0.22, 0.18)),
    ("wall_py", 0.0, ARENA_HALF + 0.1, ARENA_HALF + 0.2, 0.1, (0.2, 0.62, 0.25)),
    ("wall_nx", -ARENA_HALF - 0.1, 0.0, 0.1, ARENA_HALF + 0.2, (0.2, 0.35, 0.82)),
    ("wall_ny", 0.0, -ARENA_HALF - 0.1, ARENA_HALF + 0.2, 0.1, (0.92, 0.8, 0.2)),
)


def nav_mjcf(scene_seed: int) -> str:
    """The nav arena as an MJCF string (walls, checkered floor, obstacles, mocap camera body)."""
    def rgba(rgb):
        return " ".join(f"{c:.3f}" for c in rgb) + " 1"

    geoms = []
    for name, x, y, hx, hy, rgb in _WALLS:
        geoms.append(f'<geom name="{name}" type="box" pos="{x} {y} 0.5" size="{hx} {hy} 0.5" '
                     f'rgba="{rgba(rgb)}"/>')
    for i, o in enumerate(nav_layout(scene_seed)):
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


def build_nav(mujoco, scene_seed: int) -> tuple[object, str]:
    """The compiled arena of ``scene_seed`` and its camera name (for :func:`~lam_fast.envs.render.cached_scene`)."""
    return mujoco.MjModel.from_xml_string(nav_mjcf(scene_seed)), "ego"


def nav_clearance(layout: Sequence[_Obstacle], x: float, y: float) -> float:
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


class NavSim:
    """One nav episode: ``propose`` (the random policy), ``execute`` (blocking, kinematics), ``render``."""

    def __init__(self, scene: Scene, scene_seed: int, rng: np.random.Generator) -> None:
        self.scene, self.rng = scene, rng
        self.layout = nav_layout(scene_seed)
        scene.mujoco.mj_resetData(scene.model, scene.data)
        while True:  # collision-free start with a margin
            x, y = rng.uniform(-ARENA_HALF, ARENA_HALF, size=2)
            if nav_clearance(self.layout, x, y) >= NAV_CLEARANCE + 0.1:
                break
        self.pose = np.array([x, y, rng.uniform(-math.pi, math.pi)], np.float32)
        self.previous = np.array([_SPEED_MEAN, 0.0])
        self.escape, self.escape_steps = 0.0, 0  # turning direction while escaping a block
        info = TASK_INFO["nav"]
        self.low, self.high = np.array(info.action_low), np.array(info.action_high)

    def _free(self, angle: float, distance: float) -> float:
        """Clearance of the point ``distance`` ahead of the agent, ``angle`` off its heading."""
        x, y, yaw = (float(v) for v in self.pose)
        return nav_clearance(self.layout, x + distance * math.cos(yaw + angle),
                             y + distance * math.sin(yaw + angle))

    def _heading_clear(self) -> bool:
        return all(self._free(0.0, d) >= NAV_CLEARANCE + 0.05 for d in (0.3, 0.6))

    def propose(self) -> np.ndarray:
        noise = self.rng.normal(size=2) * (_SPEED_NOISE, _YAW_NOISE)  # drawn every step
        if self.escape:
            # Turning on the spot after a block: until the way ahead is clear (or a full turn).
            self.escape_steps += 1
            if not self._heading_clear() and self.escape_steps * _TURN < 2 * math.pi:
                return np.array([0.0, self.escape * _TURN])
            self.escape, self.previous = 0.0, np.array([_SPEED_MEAN, 0.0])
        proposal = AR * self.previous + (1 - AR) * np.array([_SPEED_MEAN, 0.0]) + noise
        # Steer towards the freer side when something is close ahead (fewer blocks).
        if self._free(0.0, _PROBE) < _PROBE:
            left, right = self._free(_PROBE_ANGLE, _PROBE), self._free(-_PROBE_ANGLE, _PROBE)
            proposal[1] += _STEER if left >= right else -_STEER
        return proposal

    def execute(self, action: np.ndarray, *, turn_when_blocked: bool) -> np.ndarray:
        action = np.clip(np.asarray(action, np.float64), self.low, self.high).astype(np.float32)
        nxt = integrate_nav(self.pose, action[None])[-1]
        if nav_clearance(self.layout, float(nxt[0]), float(nxt[1])) < NAV_CLEARANCE:
            turn = action[1]
            if turn_when_blocked:
                if not self.escape:  # turn towards the freer side
                    left, right = self._free(1.2, _PROBE), self._free(-1.2, _PROBE)
                    self.escape, self.escape_steps = (1.0 if left >= right else -1.0), 0
                turn = self.escape * _TURN
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

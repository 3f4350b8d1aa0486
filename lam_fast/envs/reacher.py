"""``reacher``: manipulation seen by a fixed camera.

The two-link planar arm of the dm_control ``reacher`` task (``dm_control==1.0.50``), seen from its
top-down ``fixed`` camera (0.75 m above the 0.6 x 0.6 m arena; image right = world +x, image up =
world +y). The arm's capsules and fingertip are drawn 4 cm thick (2 cm in dm_control) to be visible
at 64x64. A coloured target sphere is placed at random per episode (uniform angle, radius 5-20 cm,
as in dm_control) and stays fixed within the episode; it never moves, so it is context, not state.

**Actions** (2-d, radians per step, each in [-0.3, 0.3]): joint-angle deltas
``(d_shoulder, d_wrist)``, applied as ``q <- q + a``; the shoulder angle is then wrapped to
[-pi, pi), the wrist angle clipped to its joint range (:func:`reacher_wrist_range`, +-160 deg in the
MJCF; the recorded wrist action is the executed delta). **Poses** (4-d): ``(finger_x, finger_y, q0,
q1)``: the fingertip position in metres (MuJoCo's ``xpos`` of the ``finger`` body, world frame, arm
base at the origin) and the two joint angles in radians. :func:`reacher_end_effector` is the arm's
forward kinematics (``finger = L1 (cos q0, sin q0) + L2 (cos(q0 + q1), sin(q0 + q1))``,
``L1 = L2 = 0.12`` m read from the MJCF). **Policy**: start angles uniform (shoulder in [-pi, pi),
wrist in its range); AR(1) actions ``a_t = 0.7 a_{t-1} + noise`` with noise std 0.1 rad, clipped
to the bounds.

The MJCF is the one source of the arm's geometry and joint range: the simulator, the kinematics
and the planners' metrics all read them from it, as plain XML (no MuJoCo needed).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import torch

from lam_fast.envs.render import Scene
from lam_fast.envs.tasks import AR, TASK_INFO

_NOISE = 0.1
_THICKNESS = 0.02  # radius of the arm's capsules and fingertip sphere (dm_control: 0.01)


def reacher_mjcf() -> tuple[str, dict[str, bytes]]:
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
def _mjcf_root() -> ElementTree.Element:
    return ElementTree.fromstring(reacher_mjcf()[0])


@functools.lru_cache(maxsize=1)
def _links() -> tuple[float, float, float, float]:
    """``(base_x, base_y, L1, L2)`` of the reacher arm, read from its MJCF once.

    The shoulder is the ``arm`` body's position, ``L1`` the ``hand`` body's offset in the arm
    frame and ``L2`` the ``finger`` body's offset in the hand frame (both along the body's x axis
    in the dm_control model; checked against MuJoCo's ``xpos`` by the tests).
    """
    positions = {}
    for body in _mjcf_root().iter("body"):
        positions[body.get("name")] = [float(v) for v in body.get("pos", "0 0 0").split()]
    arm, hand, finger = positions["arm"], positions["hand"], positions["finger"]
    if abs(hand[1]) > 0 or abs(finger[1]) > 0:
        raise RuntimeError("unexpected reacher MJCF: link offsets are not along the x axis")
    return arm[0], arm[1], hand[0], finger[0]


@functools.lru_cache(maxsize=1)
def reacher_wrist_range() -> tuple[float, float] | None:
    """The wrist joint's range ``(low, high)`` in radians, read from the MJCF; None if unlimited.

    Follows MuJoCo's rules: angles in the ``<compiler angle=...>`` unit (degrees unless it says
    ``radian``), a joint limited when ``limited="true"``, or when it is ``"auto"`` (the default)
    and a range is given. The tests check it against MuJoCo's compiled ``model.joint("wrist").range``.
    """
    root = _mjcf_root()
    compiler = root.find("compiler")
    degrees = compiler is None or compiler.get("angle", "degree") == "degree"
    wrist = next(joint for joint in root.iter("joint") if joint.get("name") == "wrist")
    text = wrist.get("range")
    if text is None or wrist.get("limited", "auto") == "false":
        return None
    low, high = (float(v) for v in text.split())
    return (math.radians(low), math.radians(high)) if degrees else (low, high)


def reacher_end_effector(q: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Forward kinematics of the reacher arm: joint angles ``(..., 2)`` -> fingertip xy ``(..., 2)``.

    ``finger = base + L1 (cos q0, sin q0) + L2 (cos(q0 + q1), sin(q0 + q1))`` in metres, with the
    link lengths read from the MJCF. Takes and returns numpy arrays or torch tensors (any batch
    shape, differentiable in torch); needs no MuJoCo.
    """
    base_x, base_y, first, second = _links()
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


def build_reacher(mujoco) -> tuple[object, str]:
    """The compiled reacher model with the thicker arm, and its camera name (for :func:`cached_scene`)."""
    xml, assets = reacher_mjcf()
    model = mujoco.MjModel.from_xml_string(xml, assets)
    # The arm is 2 cm thick in dm_control: ~1 pixel at 64x64. Draw it twice as thick
    # (looks only: no collisions, kinematic motion).
    for name in ("arm", "hand", "finger"):
        model.geom(name).size[0] = _THICKNESS
    return model, "fixed"


class ReacherSim:
    """One reacher episode: ``propose`` (the random policy), ``execute`` (kinematics), ``render``."""

    def __init__(self, scene: Scene, rng: np.random.Generator) -> None:
        self.scene, self.rng = scene, rng
        model, mujoco = scene.model, scene.mujoco
        self.wrist_range = reacher_wrist_range()
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
        noise = self.rng.normal(0.0, _NOISE, size=2)
        return AR * self.previous + noise

    def execute(self, action: np.ndarray) -> np.ndarray:
        """Apply ``action`` (clipped to the bounds, the wrist to its range); the executed delta."""
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
        """Render the current pose into ``out``; returns the pose (finger x, y, q0, q1) float32."""
        self.scene.data.qpos[:2] = self.q
        self.scene.render(out)
        finger = self.scene.data.xpos[self.finger]
        return np.array([finger[0], finger[1], self.q[0], self.q[1]], np.float32)

"""Offscreen MuJoCo rendering: importing MuJoCo with an offscreen OpenGL backend, cached scenes.

**Choosing the OpenGL backend.** MuJoCo reads ``MUJOCO_GL`` once, when it is imported, and without
it takes GLFW, which needs a display. Every MuJoCo import of this package goes through
:func:`import_mujoco`, which sets ``MUJOCO_GL=egl`` (unless the environment already names a
backend, e.g. ``osmesa`` with Debian's ``libosmesa6``) right before the first ``import mujoco``.
So the choice happens where rendering is first set up, not when a module is imported; a process
that imported ``mujoco`` itself before, without ``MUJOCO_GL``, keeps GLFW, and the
:class:`RenderUnavailable` raised when no renderer can be made says so.

**Triton.** Mesa's software renderer (EGL/OSMesa on a CPU) loads its own LLVM; Triton bundles
another. Importing Triton *after* Mesa's LLVM is loaded segfaults (measured with triton 3.9 and
Mesa llvmpipe); the other order works. So :func:`import_mujoco` loads Triton's native library
first when it is installed: a process that renders sim video can still run the Triton kernels.

**Speed.** Shadows, reflections and multisampling are off: at 64x64 on a CPU (EGL on Mesa's
llvmpipe) the reacher renders ~400 frames/s and nav ~250-450 frames/s.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
from collections.abc import Callable, Hashable

import numpy as np

#: the backend :func:`import_mujoco` asks for when the environment names none
DEFAULT_MUJOCO_GL = "egl"
_GL_HELP = ("MuJoCo offscreen rendering needs EGL (libEGL, MUJOCO_GL=egl) or OSMesa "
            "(Debian libosmesa6, MUJOCO_GL=osmesa)")


class RenderUnavailable(RuntimeError):
    """Nothing can be rendered here: MuJoCo is not installed, or no offscreen OpenGL backend
    (EGL, OSMesa) can be loaded. Tests skip on this exception, and on this one only."""


def import_mujoco():
    """The ``mujoco`` module, imported with an offscreen ``MUJOCO_GL`` (see the module docstring).

    Raises:
        RenderUnavailable: MuJoCo is missing or cannot be imported with the chosen backend.
    """
    if "mujoco" not in sys.modules:
        os.environ.setdefault("MUJOCO_GL", DEFAULT_MUJOCO_GL)
    if importlib.util.find_spec("triton") is not None:
        import triton.runtime  # noqa: F401  (before Mesa's LLVM: see the module docstring)
    try:
        import mujoco
    except ModuleNotFoundError as error:
        if error.name != "mujoco":
            raise
        raise RenderUnavailable("lam_fast.envs needs MuJoCo: pip install mujoco==3.17.0 "
                                "dm_control==1.0.50 (the 'sim' extra)") from error
    except (ImportError, AttributeError, RuntimeError, OSError) as error:
        raise RenderUnavailable(f"cannot import mujoco with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} "
                                f"({type(error).__name__}: {error}); {_GL_HELP}") from error
    return mujoco


class Scene:
    """A compiled model, its data and an offscreen renderer for one camera.

    Multisampling, shadows and reflections are switched off in ``model`` (several times faster on
    a software renderer).
    """

    def __init__(self, mujoco, model, camera: str, image_size: int) -> None:
        self.mujoco, self.model, self.camera = mujoco, model, camera
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0
        self.data = mujoco.MjData(model)
        try:
            self.renderer = mujoco.Renderer(model, image_size, image_size)
        except Exception as error:  # GL errors come in many types (EGLError, GLError, AttributeError, ...)
            first = (" (mujoco was imported before lam_fast.envs set MUJOCO_GL: its default backend was "
                     "used; set MUJOCO_GL=egl in the environment)") if "MUJOCO_GL" not in os.environ else ""
            raise RenderUnavailable(
                f"cannot create a MuJoCo renderer with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}{first} "
                f"({type(error).__name__}: {error}); {_GL_HELP}"
            ) from error

    def render(self, out: np.ndarray) -> None:
        """Forward kinematics of the current ``data``, then the camera's image into ``out`` (H, W, 3) uint8."""
        self.mujoco.mj_forward(self.model, self.data)
        self.renderer.update_scene(self.data, camera=self.camera)
        self.renderer.render(out=out)

    def close(self) -> None:
        self.renderer.close()


_SCENES: dict[Hashable, Scene] = {}


def _close_scenes() -> None:
    """Free the GL contexts before interpreter teardown (avoids EGL errors printed at exit)."""
    while _SCENES:
        _, scene = _SCENES.popitem()
        try:
            scene.close()
        except Exception as error:  # noqa: BLE001 - at exit: say so, and still free the others
            print(f"lam_fast.envs: closing a MuJoCo renderer at exit failed ({type(error).__name__}: {error})",
                  file=sys.stderr)


def cached_scene(key: Hashable, build: Callable[[object], tuple[object, str]], image_size: int) -> Scene:
    """The scene of ``key``, made once per process: ``build(mujoco) -> (model, camera name)``.

    Renderers own GL contexts, which are slow to make: episodes of a task share one scene.
    """
    cache_key = (key, image_size)
    if cache_key not in _SCENES:
        mujoco = import_mujoco()
        model, camera = build(mujoco)
        _SCENES[cache_key] = Scene(mujoco, model, camera, image_size)
        # (Re-)registered after MuJoCo's import registered its EGL exit handler: runs before it.
        atexit.unregister(_close_scenes)
        atexit.register(_close_scenes)
    return _SCENES[cache_key]

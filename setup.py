"""Extension build only: lam_fast._C from csrc/ (metadata lives in pyproject.toml).

C++ (CPU, OpenMP) sources are always built. CUDA sources (csrc/cuda/*.cu) are added when
LAM_FAST_BUILD_CUDA=1, or with LAM_FAST_BUILD_CUDA=auto (the default) when CUDA_HOME is set and the
installed torch was built with CUDA. LAM_FAST_BUILD_CUDA=0 never builds them. No GPU is queried.
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension


def want_cuda() -> bool:
    flag = os.environ.get("LAM_FAST_BUILD_CUDA", "auto").lower()
    if flag not in {"0", "1", "auto"}:
        raise ValueError(f"LAM_FAST_BUILD_CUDA must be 0, 1 or auto, got {flag!r}")
    if flag == "auto":
        return bool(os.environ.get("CUDA_HOME")) and torch.version.cuda is not None
    return flag == "1"


def extension():
    sources = sorted(glob.glob("csrc/*.cpp"))
    cxx = ["-O3", "-fopenmp", "-std=c++20"]
    if want_cuda():
        return CUDAExtension(
            "lam_fast._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            extra_compile_args={"cxx": cxx + ["-DLAM_FAST_WITH_CUDA"], "nvcc": ["-O3", "-std=c++20"]},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension("lam_fast._C", sources, extra_compile_args=cxx, extra_link_args=["-fopenmp"])


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})

"""Triton kernels and their launchers, shipped inside the wheel as ``lam_fast._kernels``.

Only kernels and launchers live here (tensors in, tensors out; no autograd, no nn.Module). Importing
this package does not import triton: each kernel module does, and is imported by its op's
``triton.py`` backend loader on first use.

Why this package sits one folder down, in ``kernels/lam_fast_kernels/``, with no ``__init__.py`` in
``kernels/``: the top-level name ``kernels`` belongs to the Hugging Face kernel hub (PyPI
``kernels``), which ``transformers`` imports. Whenever the checkout's root is on ``sys.path``
(``python -m pytest`` or ``python -c`` run from the checkout put it first), a regular package
``kernels/`` would be found before site-packages and shadow it. A folder without ``__init__.py`` is
only a namespace portion, which Python's import system ranks below any regular package on the path,
so ``import kernels`` and ``importlib.util.find_spec("kernels")`` give the installed hub package.
pyproject.toml maps ``lam_fast._kernels`` to this folder (``package-dir``), for the wheel and for
editable installs; under any other name (``kernels.lam_fast_kernels``, when no hub package is
installed and ``kernels`` is an empty namespace) this package refuses to load.
tests/test_package.py checks every supported way of running.
"""

if __name__ != "lam_fast._kernels":
    raise ImportError(f"lam_fast's Triton kernels are the package lam_fast._kernels, not {__name__!r}")

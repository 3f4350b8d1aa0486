"""Triton kernels and their launchers, shipped inside the wheel as ``lam_fast._kernels``.

Only kernels and launchers live here (tensors in, tensors out; no autograd, no nn.Module). Importing
this package does not import triton: each kernel module does, and is imported by its op's
``triton.py`` backend loader on first use.

Never a top-level package called ``kernels``. That name belongs to the Hugging Face kernel hub
(PyPI ``kernels``), which ``transformers`` imports. Whenever the checkout's root is on ``sys.path``
(``python -m pytest`` or ``python -c`` run from the checkout put it first), Python would find this
folder before site-packages and run this file as ``kernels``. So this file checks the name it runs
under. As ``lam_fast._kernels`` (the package-dir mapping of pyproject.toml, in the wheel and in an
editable install) it is this package. As ``kernels`` it hands the import over: it finds ``kernels``
on ``sys.path`` without the entries that lead back to this folder, loads that package in its place
in ``sys.modules`` (the import machinery returns what ``sys.modules`` holds once this file has run),
or raises ModuleNotFoundError when no other ``kernels`` is installed. A folder layout alone could
not do this: without an ``__init__.py`` here, ``import kernels`` would still give a namespace
package of this folder whenever the hub package is not installed. tests/test_package.py checks
every supported way of running.
"""


def _hand_over_to_installed(name: str) -> None:
    """Replace this module in ``sys.modules[name]`` by the ``name`` package found elsewhere on sys.path."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.realpath(__file__))
    elsewhere = [entry for entry in sys.path if isinstance(entry, str)
                 and os.path.realpath(os.path.join(entry or os.getcwd(), name)) != here]
    spec = importlib.machinery.PathFinder.find_spec(name, elsewhere)
    if spec is None or spec.loader is None:
        del sys.modules[name]
        raise ModuleNotFoundError(
            f"No module named {name!r} (the folder {here} holds lam_fast's Triton kernels, importable only as "
            "lam_fast._kernels; no other package of that name is installed)", name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


if __name__ == "kernels":
    _hand_over_to_installed(__name__)
elif __name__ != "lam_fast._kernels":
    raise ImportError(f"lam_fast's Triton kernels are the package lam_fast._kernels, not {__name__!r}")

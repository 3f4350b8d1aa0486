"""Every command line of lam_fast, one module per command group (the top layer: nothing imports it).

``lam-fast <command>`` (and ``python -m lam_fast.cli``) is :func:`lam_fast.cli.main.main`; each
group module owns its argument parser and turns user errors into one line on stderr and exit code
2. ``train/run.py`` (the DeepSpeed entry point) is :func:`lam_fast.cli.train.main`.
"""

from lam_fast.cli.main import main

__all__ = ["main"]

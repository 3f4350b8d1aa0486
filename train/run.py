"""Entry point: ``deepspeed train/run.py --reg sparse ...`` or ``python train/run.py ...``.

A user error (bad setting, missing file, locked run directory) is one line ``train/run.py: error: ...``
and exit 2; ``--debug`` or ``LAM_FAST_DEBUG=1`` shows its traceback (:mod:`lam_fast.cli.errors`)."""

import sys

from lam_fast.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

"""Entry point: ``deepspeed train/run.py --reg sparse ...`` or ``python train/run.py ...``."""

import sys

from lam_fast.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

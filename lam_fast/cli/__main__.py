"""``python -m lam_fast.cli``: the ``lam-fast`` command."""

import sys

from lam_fast.cli.main import main

sys.exit(main())

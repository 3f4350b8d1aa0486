"""``lam-fast sim generate ...``: action-labelled MuJoCo video."""

from lam_fast.data.sim import main  # noqa: F401  (moves here from the simulator)

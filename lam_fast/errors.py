"""The error types every layer may raise for a mistake of the user's (a missing or wrong-kind
path, an invalid setting, data that is not what the command needs), as opposed to a fault of the
program. The command lines (``lam_fast.cli``) print a :class:`UserError` as one line,
``lam-fast <command>: error: <message>``, and exit 2; any other exception keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for; the message says what and, where it can, how to fix it."""


class RunLocked(UserError):
    """Another live process holds the run directory's lock (the message names its pid and host)."""


class CheckpointError(UserError):
    """No intact checkpoint where one is needed (the message names the file and why it is unusable)."""


__all__ = ["CheckpointError", "RunLocked", "UserError"]

"""The one error path of every command line (``lam-fast <command>``, ``train/run.py``).

A :class:`~lam_fast.errors.UserError` (a missing or wrong-kind path, an invalid setting, data that
is not what the command needs) prints one line, ``<prog>: error: <message>``, to stderr and exits
2, like argparse's own errors. ``--debug`` anywhere in the arguments (taken out before the
command's parser sees them) or ``LAM_FAST_DEBUG=1`` in the environment re-raises it instead, with
its traceback. Any other exception is a fault of the program and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from lam_fast.errors import UserError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "LAM_FAST_DEBUG"
#: exit status of a user error (argparse's, too)
USAGE_EXIT = 2


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """(``argv`` without ``--debug``, whether the traceback of a user error is wanted: the flag, or
    ``LAM_FAST_DEBUG`` set to anything but empty or ``0``)."""
    rest = [arg for arg in argv if arg != DEBUG_FLAG]
    return rest, len(rest) != len(argv) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (its lines joined with ``; ``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def run_command(prog: str, function: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """``function(argv)`` (default ``sys.argv[1:]``) with the user-error path described above: its
    return value, or 2 after printing ``<prog>: error: <message>`` for a :class:`UserError`."""
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    try:
        return function(argv)
    except UserError as error:
        if debug:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return USAGE_EXIT


@contextlib.contextmanager
def user_errors(*types: type[BaseException]) -> Iterator[None]:
    """Re-raise an exception of one of ``types`` (a lower layer's FileNotFoundError, say) as a
    :class:`UserError` with the same message; the original stays its ``__cause__`` (``--debug``)."""
    try:
        yield
    except UserError:
        raise
    except types as error:
        raise UserError(one_line(error)) from error


def load_run(path, device="cpu"):
    """:func:`lam_fast.runs.load_run` for a command line: no checkpoint at ``path`` is a UserError."""
    from lam_fast.runs import load_run as load

    with user_errors(FileNotFoundError):
        return load(path, device)


def load_world_model(path, device="cpu"):
    """:func:`lam_fast.runs.load_world_model` for a command line: no checkpoint at ``path`` is a UserError."""
    from lam_fast.runs import load_world_model as load

    with user_errors(FileNotFoundError):
        return load(path, device)


def run_config(path):
    """:func:`lam_fast.runs.run_config` for a command line: no checkpoint at ``path`` is a UserError."""
    from lam_fast.runs import run_config as read

    with user_errors(FileNotFoundError):
        return read(path)


__all__ = ["DEBUG_ENV", "DEBUG_FLAG", "USAGE_EXIT", "load_run", "load_world_model", "one_line", "run_command",
           "run_config", "split_debug", "user_errors"]

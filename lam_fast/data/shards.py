"""WebDataset tar shards as a video source: recognise and index them (reading only).

A shard is an **uncompressed** tar file in the WebDataset layout: a sample is the run of members
sharing a key (``000012_clip.mp4``, ``000012_clip.json``, ...). A member's key and extension follow
``webdataset.tariterators.base_plus_ext``: the extension is everything after the *first* dot of the
member's basename (``a/b.c.mp4`` has key ``a/b`` and extension ``c.mp4``). Every regular member
whose lower-cased extension is one of :data:`~lam_fast.data.video.VIDEO_EXTENSIONS` (``mp4``,
``webm``...) is one video, named by a :class:`~lam_fast.data.video.TarMember` (shard, name, byte
offset, size) and read by byte range, so :class:`~lam_fast.data.dataset.VideoClipDataset` samples
shards exactly as it samples folders (random access, deterministic, each clip once per epoch).

Indexing reads only the tar headers (Python's :mod:`tarfile`), never the video data. The index of
``x.tar`` is cached in ``x.tar.idx.json`` next to it, keyed by the shard's size and mtime (a
changed shard is re-indexed); where the folder is read-only nothing is cached. A corrupt or
truncated shard is indexed as far as it is readable, with one warning naming the shard and the
problem; a member cut short by truncation stays listed and fails at probe time (the dataset skips
and records it).

This module only reads shards; :mod:`lam_fast.data.shard_writer` writes them (``write_shards``,
through ``webdataset.ShardWriter``) and ``lam-fast make-shards`` (:mod:`lam_fast.cli.data`) is its
command line. Reading needs only ``braceexpand`` (a webdataset dependency), and that only for brace
patterns.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import warnings

from lam_fast._moved import moved
from lam_fast.data.video import VIDEO_EXTENSIONS, TarMember
from lam_fast.io import write_json_atomic

__all__ = [
    "INDEX_SUFFIX",
    "TAR_SUFFIX",
    "VIDEO_MEMBER_EXTENSIONS",
    "index_path",
    "is_shard_source",
    "member_extension",
    "shard_members",
]

# The writer and its command line moved out of this reader (they imported each other's modules).
__getattr__ = moved(__name__, {
    "WrittenShards": "lam_fast.data.shard_writer",
    "write_shards": "lam_fast.data.shard_writer",
    "add_make_shards_arguments": "lam_fast.cli.data",
    "make_shards_main": "lam_fast.cli.data",
})

#: Suffix of the cached index written next to each shard (``train-000000.tar.idx.json``).
INDEX_SUFFIX = ".idx.json"
_INDEX_FORMAT = "lam_fast.shard_index"
_INDEX_VERSION = 1

#: The suffix of an (uncompressed) shard.
TAR_SUFFIX = ".tar"
# Compressed tars are recognised as shards only to be refused with a clear message.
_COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz",
                        ".tar.zst", ".tar.zstd", ".tzst")
# Magic numbers of compressed streams, for a compressed tar named ``.tar``.
_COMPRESSION_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
                      (b"\x28\xb5\x2f\xfd", "zstd"))
_BLOCK = tarfile.BLOCKSIZE  # 512
# webdataset's tar_file_iterator skips these names (its ``skip_meta`` default).
_META_NAME = re.compile(r"__[^/]*__($|/)")
# webdataset.tariterators.base_plus_ext: key = up to the first dot of the basename.
_BASE_PLUS_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
# A brace group that expands: {000..009} or {a,b}.
_BRACE_GROUP = re.compile(r"\{[^{}]*(?:\.\.|,)[^{}]*\}")
#: Lower-cased WebDataset extensions of the members that are videos (``mp4``, ``webm``...).
VIDEO_MEMBER_EXTENSIONS: frozenset[str] = frozenset(ext.lstrip(".").lower() for ext in VIDEO_EXTENSIONS)


def member_extension(name: str) -> str | None:
    """The WebDataset extension of tar member ``name`` (after the first dot of its basename).

    Same split as ``webdataset.tariterators.base_plus_ext``; None when the basename has no dot.
    Not lower-cased.
    """
    match = _BASE_PLUS_EXT.match(name)
    return match.group(2) if match else None


def _is_video_member(name: str) -> bool:
    ext = member_extension(name)
    return ext is not None and ext.lower() in VIDEO_MEMBER_EXTENSIONS


def _is_compressed_name(name: str) -> bool:
    return name.lower().endswith(_COMPRESSED_SUFFIXES)


def _is_tar_name(name: str) -> bool:
    """A shard-like file name: ``.tar``, or a compressed tar (refused later, with a reason)."""
    return name.lower().endswith(TAR_SUFFIX) or _is_compressed_name(name)


def _expand_braces(pattern: str) -> list[str]:
    """Brace expansion as WebDataset does it (``braceexpand``): ``a-{0..2}.tar`` -> 3 names."""
    try:
        from braceexpand import braceexpand
    except ImportError as error:  # pragma: no cover - braceexpand comes with webdataset
        raise ImportError("brace patterns of shards need braceexpand: pip install webdataset") from error
    return list(braceexpand(pattern))


def _pattern_shards(source: str) -> list[str] | None:
    """The shard names of a brace pattern, or None when ``source`` is not one.

    A pattern has at least one brace group that expands (``{000..009}``, ``{a,b}``), and every
    name it expands to looks like a tar file.
    """
    if not _BRACE_GROUP.search(source) or not _is_tar_name(source):
        return None  # cheap test first: other paths never need braceexpand
    names = _expand_braces(source)
    if names == [source] or not all(_is_tar_name(name) for name in names):
        return None
    return names


def _folder_shards(folder: str) -> list[str] | None:
    """The tar files below ``folder`` (recursively, sorted), or None when it holds videos or no tar."""
    video_exts = {ext.lower() for ext in VIDEO_EXTENSIONS}
    shards = []
    for parent, _, names in os.walk(folder):
        for name in names:
            if os.path.splitext(name)[1].lower() in video_exts:
                return None
            if _is_tar_name(name):
                shards.append(os.path.join(parent, name))
    return sorted(shards) or None


def is_shard_source(source: object) -> bool:
    """Whether ``source`` names WebDataset tar shards.

    True for a path (str or PathLike) that is an existing ``.tar`` file, a brace pattern whose
    names are tar files (``dir/train-{000000..000009}.tar``; the files need not exist, a missing
    one is an error in :func:`shard_members`), or an existing folder holding ``.tar`` files and no
    video file (by :data:`~lam_fast.data.video.VIDEO_EXTENSIONS`). Compressed tars
    (``.tar.gz``...) count too, so that :func:`shard_members` refuses them with a reason. False for
    anything else: folders of videos, CSV lists, single videos, sequences of paths.
    """
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = os.fspath(source)
    if not isinstance(path, str):
        return False
    if os.path.isfile(path):
        return _is_tar_name(path)
    if os.path.isdir(path):
        return _folder_shards(path) is not None
    return _pattern_shards(path) is not None


def _shard_paths(source: str | os.PathLike[str]) -> list[str]:
    """The shard files named by ``source``, in order; ValueError for missing or compressed ones."""
    path = os.fspath(source)
    if os.path.isfile(path):
        shards = [path]
    elif os.path.isdir(path):
        shards = _folder_shards(path) or []
    else:
        shards = _pattern_shards(path) or []
        missing = [name for name in shards if not os.path.isfile(name)]
        if missing:
            shown = ", ".join(repr(name) for name in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise ValueError(f"{len(missing)} of the {len(shards)} shards of {path!r} do not exist: "
                             f"{shown}{more}")
    if not shards:
        raise ValueError(f"{path!r} names no tar shard")
    compressed = [name for name in shards if _is_compressed_name(name)]
    if compressed:
        raise ValueError(
            f"compressed tar shards are not supported: {compressed[0]!r}"
            f"{f' (and {len(compressed) - 1} more)' if len(compressed) > 1 else ''}. Shards must be "
            "uncompressed .tar files, so that videos can be read by byte range (random access); "
            "decompress them (gunzip) or rewrite them with lam-fast make-shards"
        )
    return shards


def _check_not_compressed(shard: str) -> None:
    """ValueError when a file named ``.tar`` holds a compressed stream."""
    try:
        with open(shard, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return  # reported by the indexer
    for magic, kind in _COMPRESSION_MAGIC:
        if head.startswith(magic):
            raise ValueError(
                f"shard {shard!r} is {kind}-compressed. Shards must be uncompressed .tar files, so "
                "that videos can be read by byte range (random access); decompress it first"
            )


def _index_tar(shard: str, file_size: int) -> tuple[list[tuple[str, int, int]], str | None]:
    """``(name, offset, size)`` of the regular members of ``shard`` and the problem met, if any.

    Reads the headers only. Stops at the first unreadable header; a member whose data runs past
    the end of the file (truncation) is kept, and reported as the problem. An I/O error (OSError)
    propagates: it says nothing about the file's content, so it must not be cached.
    """
    if file_size == 0:
        return [], "empty file"
    members: list[tuple[str, int, int]] = []
    end = 0  # first byte after the last member read (its data padded to whole blocks)
    error = None
    try:
        tar = tarfile.open(shard, mode="r:")
    except tarfile.TarError as exc:
        error = exc
    else:
        with tar:
            while True:
                try:
                    info = tar.next()
                except tarfile.TarError as exc:
                    error = exc
                    break
                if info is None:
                    break
                end = info.offset_data + -(-info.size // _BLOCK) * _BLOCK
                if info.isreg() and not _META_NAME.match(info.name):
                    members.append((info.name, info.offset_data, info.size))
    # tarfile may also stop silently at a bad or missing header: look at what follows the last member.
    cut = [(name, offset, size) for name, offset, size in members if offset + size > file_size]
    if cut:
        name, offset, size = cut[0]
        return members, (f"truncated: the file ends inside member {name!r} "
                         f"({max(0, file_size - offset)} of its {size} bytes present)")
    if end >= file_size:
        return members, (f"truncated? the file ends after {len(members)} members without the tar "
                         "end-of-archive marker")
    if end + _BLOCK > file_size:
        return members, f"truncated: the file ends inside the tar header at byte {end}"
    why = f" ({error})" if error is not None else ""
    if end == 0:
        return [], f"not a readable tar file{why}"
    if error is None:
        with open(shard, "rb") as handle:
            handle.seek(end)
            if handle.read(_BLOCK) == bytes(_BLOCK):
                return members, None  # the end-of-archive marker
    return members, (f"unreadable tar header at byte {end} of {file_size}{why}: corrupt or truncated; "
                     "members after it are not indexed")


def index_path(shard: str) -> str:
    """The cached index file of ``shard``: ``<shard>.idx.json``."""
    return shard + INDEX_SUFFIX


def _load_cached_index(shard: str, stat: os.stat_result) -> tuple[list[tuple[str, int, int]], str | None] | None:
    """The cached index of ``shard`` if it exists and matches the shard's size and mtime."""
    try:
        with open(index_path(shard), encoding="utf-8") as handle:
            cached = json.load(handle)
        if (cached.get("format") != _INDEX_FORMAT or cached.get("version") != _INDEX_VERSION
                or cached.get("shard_size") != stat.st_size
                or cached.get("shard_mtime_ns") != stat.st_mtime_ns):
            return None
        members = [(str(name), int(offset), int(size)) for name, offset, size in cached["members"]]
        problem = cached.get("problem")
        return members, (str(problem) if problem is not None else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_cached_index(shard: str, stat: os.stat_result, members: list[tuple[str, int, int]],
                        problem: str | None) -> None:
    """Write ``<shard>.idx.json`` atomically (temporary file, then rename); skip if not writable."""
    record = {"format": _INDEX_FORMAT, "version": _INDEX_VERSION, "shard_size": stat.st_size,
              "shard_mtime_ns": stat.st_mtime_ns, "problem": problem,
              "members": [list(member) for member in members]}
    try:
        write_json_atomic(index_path(shard), record, indent=None)
    except OSError:
        return  # read-only folder: no cache


def _shard_index(shard: str) -> tuple[list[tuple[str, int, int]], str | None]:
    """Index of ``shard`` (cached), and the problem met while indexing it, if any."""
    _check_not_compressed(shard)
    try:
        stat = os.stat(shard)
        cached = _load_cached_index(shard, stat)
        if cached is not None:
            return cached
        members, problem = _index_tar(shard, stat.st_size)
    except OSError as error:  # unreadable now, perhaps not later: not cached
        return [], f"cannot read ({error})"
    _write_cached_index(shard, stat, members, problem)
    return members, problem


def shard_members(source: str | os.PathLike[str]) -> list[TarMember]:
    """Every video member of the shards named by ``source``, in shard order then member order.

    Args:
        source: a ``.tar`` file, a brace pattern of them, or a folder of them (searched
            recursively, sorted); see :func:`is_shard_source`.

    Returns:
        One :class:`~lam_fast.data.video.TarMember` per regular member whose WebDataset extension
        (see :func:`member_extension`), lower-cased, is in
        :data:`~lam_fast.data.video.VIDEO_EXTENSIONS`. A corrupt or truncated shard contributes
        the members readable before the damage, with one warning naming the shard and the problem.

    Raises:
        ValueError: shards of a pattern are missing (named in the message), a shard is compressed
            (shards must be uncompressed for random access), or no shard holds a video member.
    """
    shards = _shard_paths(source)
    found: list[TarMember] = []
    total_members = 0
    for shard in shards:
        members, problem = _shard_index(shard)
        total_members += len(members)
        videos = [TarMember(shard, name, offset, size) for name, offset, size in members
                  if _is_video_member(name)]
        if problem is not None:
            warnings.warn(f"shard {shard!r}: {problem}; indexed {len(videos)} video members before it",
                          stacklevel=2)
        found.extend(videos)
    if not found:
        raise ValueError(
            f"the {len(shards)} shard(s) of {os.fspath(source)!r} hold no video member "
            f"({total_members} members; a video is a member named KEY.EXT with EXT one of "
            f"{sorted(VIDEO_MEMBER_EXTENSIONS)})"
        )
    return found

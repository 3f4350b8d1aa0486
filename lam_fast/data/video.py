"""CPU video decoding with PyAV: probing files and decoding fixed-rate clips.

Times are seconds from the video stream's first timestamp (``stream.start_time``), so time 0 is
the first frame whatever offset the container applies. Timestamps are compared as exact
fractions (:class:`fractions.Fraction`), so frame selection is reproducible bit for bit.

Frame selection policy (:func:`decode_clip`): clip frame ``k`` is the decoded frame whose
timestamp is **nearest** to ``start + k / fps``; a tie (target exactly midway between two frames)
goes to the earlier frame. Nearest rather than "latest at or before", because containers round
timestamps (WebM/Matroska store milliseconds: a 24 fps frame due at 1/24 s is stamped 0.042 s, just
after its target, and "at or before" would repeat the previous frame). Sources of any frame rate,
variable ones included, go through the same rule; a clip rate above the source rate repeats frames.

A video is named by a path or by a :class:`TarMember` (a file inside an uncompressed tar
shard, read by byte range without extracting it). Index-based decoders (OpenCV, DALI) use
:func:`frame_indices`, the same nearest-frame rule on the stream's nominal frame grid.

Raw YUV4MPEG2 (``.y4m``) files decode like any container (FFmpeg's ``yuv4mpegpipe`` demuxer); one
FFmpeg cannot read is diagnosed from its own layout (header, ``FRAME`` lines, frame size), so the
reason names what is wrong with the file rather than FFmpeg's error code.

PyAV is an optional dependency (the ``video`` extra); it is imported inside the functions.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import io
import itertools
import math
import os
import re
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

__all__ = [
    "VIDEO_EXTENSIONS",
    "TarMember",
    "VideoDecodeError",
    "VideoInfo",
    "VideoRecord",
    "VideoRef",
    "decode_clip",
    "frame_indices",
    "probe_video",
    "probe_videos",
    "read_video_bytes",
    "video_name",
]

#: File extensions (lower case) of video files: what a folder source collects
#: (:func:`~lam_fast.data.sources.resolve_sources`) and what a tar shard's video members end in.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".y4m")

# probe_video seeks this far before the stated end and decodes to the end of the file, which
# proves the tail is present (a truncated file has no decodable frame there, or ends early).
_TAIL_CHECK_S = Fraction(1)
# A file whose last decodable frame ends more than this many frame intervals before the video
# stream's stated duration is truncated.
_TRUNCATION_SLACK_FRAMES = 2
# Extra slack when only the container's duration is known: it spans every stream (audio too).
_CONTAINER_DURATION_SLACK_S = Fraction(1)
# Targets this close past the end of the last frame still map to it: absorbs float rounding in
# times the caller computed from VideoInfo.duration.
_END_TOLERANCE_S = Fraction(1, 1_000_000)
# When a seek lands after the first target (keyframe index by decode time, B-frames), seek again
# this much earlier, doubling each time, down to the start of the stream.
_SEEK_BACKOFF_S = Fraction(1)
# Packets demuxed past the last clip target before choosing which frames to skip: H.264/HEVC
# reorder at most 16 frames, so every frame that could bracket a target has been seen by then.
_REORDER_DEPTH = 16
# Threads of probe_videos: probing is I/O and FFmpeg work that releases the GIL.
_PROBE_THREADS = 8
# The first bytes of a YUV4MPEG2 file; its header line is at most this long.
_Y4M_MAGIC = b"YUV4MPEG2 "
_Y4M_MAX_LINE = 1024


class VideoDecodeError(RuntimeError):
    """A video file cannot be opened, is empty or truncated, or cannot produce a requested clip."""


@dataclass(frozen=True)
class TarMember:
    """A video stored as one member of an uncompressed tar file (a WebDataset shard).

    Attributes:
        shard: path of the tar file.
        name: the member's name inside the tar.
        offset: byte offset of the member's data in the tar file.
        size: the member's size in bytes.
    """

    shard: str
    name: str
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.shard}::{self.name}"


#: What names a video: a file path, or a member of a tar shard.
VideoRef = "str | os.PathLike[str] | TarMember"


def video_name(ref: str | os.PathLike[str] | TarMember) -> str:
    """A printable name of ``ref``: the path, or ``shard::member``."""
    return str(ref) if isinstance(ref, TarMember) else os.fspath(ref)


def read_video_bytes(ref: str | os.PathLike[str] | TarMember) -> bytes:
    """The encoded bytes of a video file or tar member.

    Raises:
        VideoDecodeError: the file is missing or unreadable, or the tar member is cut short.
    """
    name = video_name(ref)
    try:
        if isinstance(ref, TarMember):
            with open(ref.shard, "rb") as handle:
                handle.seek(ref.offset)
                data = handle.read(ref.size)
            if len(data) != ref.size:
                raise VideoDecodeError(f"cannot read {name!r}: the shard ends {ref.size - len(data)} bytes "
                                       "inside the member (truncated tar?)")
            return data
        with open(ref, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise VideoDecodeError(f"cannot read {name!r}: {error}") from error


@dataclass(frozen=True)
class VideoRecord:
    """One usable video of a dataset: what every dataset's ``videos`` list holds.

    :class:`VideoInfo` (a probed file, in :class:`~lam_fast.data.dataset.VideoClipDataset`) and
    :class:`~lam_fast.data.cache.CachedVideo` (an encoded video, in
    :class:`~lam_fast.data.cache.StateCacheDataset`) extend it, so code that only names or times
    the videos of a dataset (the ranks' agreement check of training, reports) reads both alike.

    Attributes:
        path: the video's name: its file, or ``shard::member`` for a member of a tar shard.
        duration: seconds from the first frame's timestamp to the end of the last decodable frame.
    """

    path: str
    duration: float


@dataclass(frozen=True)
class VideoInfo(VideoRecord):
    """What :func:`probe_video` learns about a file's first video stream.

    Attributes:
        path: the file.
        duration: seconds from the first frame's timestamp to the end of the last decodable frame.
        fps: the stream's average frame rate (frames per second).
        num_frames: the container's frame count, else ``round(duration * fps)``, or the count of
            decoded frames when the container states no duration.
        width: frame width in pixels.
        height: frame height in pixels.
        codec: the FFmpeg name of the stream's codec (``h264``, ``vp9``, ``mjpeg``...).
        member: the tar member holding the video, or None for a plain file (then ``path`` is the
            file; for a member, ``path`` is ``shard::name``).
    """

    fps: float
    num_frames: int
    width: int
    height: int
    codec: str = ""
    member: TarMember | None = None

    @property
    def ref(self) -> str | TarMember:
        """What to pass to :func:`decode_clip` or :func:`read_video_bytes` for this video."""
        return self.member if self.member is not None else self.path


class _MemberReader(io.RawIOBase):
    """A read-only, seekable view of one tar member's byte range: PyAV reads only the parts of
    the member a clip needs (the index and the packets from the seek point on), not all of it."""

    def __init__(self, handle: io.BufferedReader, member: TarMember) -> None:
        super().__init__()
        self._handle, self._offset, self._size, self._position = handle, member.offset, member.size, 0

    @classmethod
    def open(cls, member: TarMember) -> io.BufferedReader:
        """Open ``member``; raises VideoDecodeError when the shard is missing or cut short."""
        try:
            handle = open(member.shard, "rb")  # noqa: SIM115 (closed with the reader)
        except OSError as error:
            raise VideoDecodeError(f"cannot read {str(member)!r}: {error}") from error
        missing = member.offset + member.size - os.fstat(handle.fileno()).st_size
        if missing > 0:
            handle.close()
            raise VideoDecodeError(f"cannot read {str(member)!r}: the shard ends {missing} bytes inside the "
                                   "member (truncated tar?)")
        return io.BufferedReader(cls(handle, member), buffer_size=1 << 16)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self._size - self._position)
        if count <= 0:
            return 0
        self._handle.seek(self._offset + self._position)
        count = self._handle.readinto(memoryview(buffer)[:count])
        self._position += count
        return count

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + position)
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()


def _import_av() -> types.ModuleType:
    """PyAV, or an ImportError that says how to install it."""
    try:
        import av
    except ImportError as error:
        raise ImportError("video decoding needs PyAV: pip install 'lam_fast[video]'") from error
    return av


def _open(ref: str | os.PathLike[str] | TarMember) -> tuple[InputContainer, VideoStream]:
    """Open a video file or tar member; return the container and its first video stream."""
    av = _import_av()

    name = video_name(ref)
    source = _MemberReader.open(ref) if isinstance(ref, TarMember) else name
    try:
        # metadata_errors: a damaged file's tags are not UTF-8; they are never read here
        container = av.open(source, mode="r", metadata_errors="replace")
    except (av.FFmpegError, OSError) as error:
        if not isinstance(source, str):
            source.close()
        raise VideoDecodeError(f"cannot open {name!r}: {error}") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{name!r} has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # a damaged codec description: FFmpeg names no codec
        container.close()
        raise VideoDecodeError(f"{name!r}: the video stream names no codec FFmpeg knows (damaged header?)")
    return container, stream


def _y4m_frame_bytes(width: int, height: int, colour: str) -> int | None:
    """Bytes of one frame's samples in a YUV4MPEG2 file (``C`` tag ``colour``), None if unknown."""
    match = re.fullmatch(r"(420|422|444|411|mono)(jpeg|paldv|mpeg2|alpha)?(?:p?(\d+))?", colour)
    if match is None:
        return None
    depth = 2 if match.group(3) and int(match.group(3)) > 8 else 1
    luma, half_w, half_h = width * height, -(-width // 2), -(-height // 2)
    chroma = {"420": 2 * half_w * half_h, "422": 2 * half_w * height, "444": 2 * luma,
              "411": 2 * -(-width // 4) * height, "mono": 0}[match.group(1)]
    alpha = luma if match.group(2) == "alpha" else 0
    return depth * (luma + chroma + alpha)


def _y4m_layout_problem(handle: io.BufferedIOBase, size: int) -> str:
    """What is wrong with the layout of the YUV4MPEG2 file open in ``handle`` (``size`` bytes).

    Checks the header line (``W``, ``H``, ``F``, a known ``C``) and walks the frames: each is a
    line starting ``FRAME`` then the samples of one frame. Only lines are read, never the samples.
    """
    header = handle.read(_Y4M_MAX_LINE).split(b"\n", 1)
    if len(header) < 2:
        return "the header line does not end (no newline)"
    fields = {field[:1]: field[1:] for field in header[0].decode("ascii", "replace").split()[1:]}
    try:
        width, height = int(fields["W"]), int(fields["H"])
        num, den = (int(part) for part in fields["F"].split(":"))
    except (KeyError, ValueError):
        return f"the header {header[0][:80]!r} lacks a valid W (width), H (height) or F (frame rate num:den)"
    colour = fields.get("C", "420jpeg")
    frame_bytes = _y4m_frame_bytes(width, height, colour)
    if width <= 0 or height <= 0 or num <= 0 or den <= 0 or frame_bytes is None:
        return f"the header {header[0][:80]!r} has a size, rate or colourspace (C{colour}) FFmpeg cannot use"
    layout = f"each frame is a FRAME line + {frame_bytes} bytes for W{width} H{height} C{colour}"
    position, index = len(header[0]) + 1, 0
    while position < size:
        handle.seek(position)
        line = handle.read(_Y4M_MAX_LINE).split(b"\n", 1)
        if not line[0].startswith(b"FRAME") or len(line) < 2:
            return f"frame {index} at byte {position} does not start with a FRAME line ({layout})"
        position += len(line[0]) + 1 + frame_bytes
        index += 1
    if position > size:
        return f"frame {index - 1} is cut short by {position - size} bytes: truncated? ({layout})"
    return "its layout is valid" if index else "it holds no frame"


def _y4m_reason(ref: str | os.PathLike[str] | TarMember) -> str | None:
    """Why FFmpeg cannot read ``ref``, when it is a YUV4MPEG2 (.y4m) file; else None."""
    try:
        handle = _MemberReader.open(ref) if isinstance(ref, TarMember) else open(ref, "rb")  # noqa: SIM115
    except (OSError, VideoDecodeError):
        return None
    with handle:
        if handle.read(len(_Y4M_MAGIC)) != _Y4M_MAGIC:
            return None
        size = ref.size if isinstance(ref, TarMember) else os.fstat(handle.fileno()).st_size
        handle.seek(0)
        return f"a y4m (raw YUV4MPEG2) file FFmpeg cannot read: {_y4m_layout_problem(handle, size)}"


def _frame_rate(stream: VideoStream, name: str) -> Fraction:
    """The stream's average frame rate, else the rate FFmpeg guesses from its timestamps."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    raise VideoDecodeError(f"{name!r}: the video stream states no frame rate")


def _needed_pts(packets: list, targets: list[Fraction], start_pts: int, time_base: Fraction) -> set[int] | None:
    """Timestamps of the frames that bracket each target (the last at or before it, the first
    after it): the nearest frame is one of them, whatever the tie rule. None when some packet has
    no timestamp (then nothing may be skipped)."""
    stamps = []
    for packet in packets:
        if packet.size:
            if packet.pts is None:
                return None
            stamps.append(packet.pts)
    stamps.sort()
    times = [(pts - start_pts) * time_base for pts in stamps]
    keep: set[int] = set()
    for target in targets:
        after = bisect.bisect_right(times, target)
        keep.update(stamps[j] for j in (after - 1, after) if 0 <= j < len(stamps))
    return keep


def _demux_past(packets: Iterator, horizon: Fraction, start_pts: int, time_base: Fraction) -> list:
    """The packets of ``packets`` up to ``_REORDER_DEPTH`` packets past time ``horizon``: far enough
    past the last clip target that any frame reordered before it is seen."""
    buffered, past = [], 0
    for packet in packets:
        buffered.append(packet)
        if packet.pts is not None and (packet.pts - start_pts) * time_base > horizon:
            past += 1
            if past > _REORDER_DEPTH:
                break
    return buffered


def _iter_frames(
    container: InputContainer,
    stream: VideoStream,
    seek_time: Fraction | None,
    name: str,
    targets: list[Fraction] | None = None,
) -> Iterator[tuple[Fraction, Fraction, VideoFrame]]:
    """Yield ``(time, end, frame)`` in presentation order from the keyframe before ``seek_time``.

    ``seek_time`` None decodes from the container's current position (the start, when freshly
    opened). ``time`` is the frame's timestamp and ``end`` the time its display ends (timestamp
    plus the frame's duration, or one nominal frame interval when it states none), in seconds from
    the stream start. A clean end of file stops the iteration; a demuxer or decoder error raises
    VideoDecodeError naming the time reached.

    With ``targets`` (sorted clip times), frames that cannot be the nearest frame of any target
    are not decoded when the codec allows it: the packets up to the last target are demuxed
    first (cheap), and every packet whose timestamp does not bracket a target is decoded with
    ``skip_frame=NONREF``, so the decoder drops it if no other frame references it (B-frames).
    Reference frames are always decoded, so the frames that are yielded are exact; some frames
    between targets are simply missing. A clip at 4 fps from 25 fps H.264 decodes ~35% fewer
    frames this way.
    """
    av = _import_av()

    time_base = Fraction(stream.time_base)
    start_pts = stream.start_time or 0
    interval = 1 / _frame_rate(stream, name)
    time = Fraction(0)
    context = stream.codec_context
    try:
        if seek_time is not None:
            container.seek(start_pts + int(seek_time / time_base), backward=True,
                           any_frame=False, stream=stream)
        packets = container.demux(stream)
        buffered: list = []
        keep: set[int] | None = None
        if targets:
            buffered = _demux_past(packets, targets[-1] + interval, start_pts, time_base)
            keep = _needed_pts(buffered, targets, start_pts, time_base)

        def decode(packet) -> Iterator[VideoFrame]:
            skip = keep is not None and packet.size and packet.pts not in keep
            context.skip_frame = "NONREF" if skip else "DEFAULT"
            yield from packet.decode()

        for packet in itertools.chain(buffered, packets):
            for frame in decode(packet):
                if frame.pts is None:
                    raise VideoDecodeError(f"{name!r}: decoded a frame without a timestamp")
                time = (frame.pts - start_pts) * time_base
                yield time, time + (frame.duration * time_base if frame.duration else interval), frame
    except av.FFmpegError as error:
        raise VideoDecodeError(
            f"{name!r}: decoding failed after {float(time):.3f} s: {error}"
        ) from error
    finally:
        context.skip_frame = "DEFAULT"


def probe_video(path: str | os.PathLike[str] | TarMember) -> VideoInfo:
    """Read a video's metadata and check that it decodes to its end.

    The duration comes from the video stream (else the container); the last second of the file
    is then decoded, which catches truncated files (no decodable frame at the end, or frames that
    stop well before the stated duration) and makes ``duration`` the measured end of the last
    frame. When no duration is stated at all, the whole file is decoded to count frames.

    Args:
        path: the video file.

    Returns:
        The file's :class:`VideoInfo`.

    Raises:
        VideoDecodeError: the file is missing or unreadable, has no video stream, no decodable
            frames or zero duration, or is truncated. The message gives the reason (for a y4m
            file FFmpeg cannot read, what is wrong with its header or frames).
    """
    try:
        return _probe(path)
    except VideoDecodeError as error:
        y4m = _y4m_reason(path)
        if y4m is None:
            raise
        raise VideoDecodeError(f"{video_name(path)!r} is {y4m} (FFmpeg: {error})") from error


def probe_videos(paths: Iterable[str | os.PathLike[str] | TarMember]) -> Iterator[VideoInfo | VideoDecodeError]:
    """:func:`probe_video` of each of ``paths``, in order, several at a time (probing releases the
    GIL); a video that fails gives its :class:`VideoDecodeError` in its place rather than raising."""

    def one(path: str | os.PathLike[str] | TarMember) -> VideoInfo | VideoDecodeError:
        try:
            return probe_video(path)
        except VideoDecodeError as error:
            return error

    paths = list(paths)
    if len(paths) < 2:
        yield from map(one, paths)
        return
    with concurrent.futures.ThreadPoolExecutor(min(_PROBE_THREADS, len(paths))) as pool:
        yield from pool.map(one, paths)


def _probe(path: str | os.PathLike[str] | TarMember) -> VideoInfo:
    """:func:`probe_video` without the y4m diagnosis."""
    av = _import_av()

    name = video_name(path)
    container, stream = _open(path)
    with container:
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise VideoDecodeError(f"{name!r}: the video stream has no frame size "
                                   f"({width}x{height})")
        rate = _frame_rate(stream, name)
        if stream.duration:
            stated, slack = stream.duration * Fraction(stream.time_base), Fraction(0)
        elif container.duration:
            stated, slack = Fraction(container.duration, av.time_base), _CONTAINER_DURATION_SLACK_S
        else:
            stated, slack = None, Fraction(0)
        seek_time = stated - _TAIL_CHECK_S if stated is not None and stated > _TAIL_CHECK_S else None
        decoded, end = 0, Fraction(0)
        for _, frame_end, _ in _iter_frames(container, stream, seek_time, name):
            decoded, end = decoded + 1, frame_end
        if decoded == 0:
            where = "" if seek_time is None else \
                f" in its last second (stated duration {float(stated):.3f} s): truncated?"
            raise VideoDecodeError(f"{name!r}: no decodable video frame{where}")
        if stated is not None and end < stated - slack - _TRUNCATION_SLACK_FRAMES / rate:
            raise VideoDecodeError(
                f"{name!r} is truncated: frames stop at {float(end):.3f} s of a stated "
                f"{float(stated):.3f} s"
            )
        if end <= 0:
            raise VideoDecodeError(f"{name!r} has zero duration")
        if stream.frames > 0:
            num_frames = stream.frames
        elif stated is not None:
            num_frames = round(end * rate)
        else:
            num_frames = decoded
        return VideoInfo(path=name, duration=float(end), fps=float(rate), num_frames=num_frames,
                         width=width, height=height, codec=stream.codec_context.name,
                         member=path if isinstance(path, TarMember) else None)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``size`` (the longer side rounded, never
    below ``size``): the geometry every decoder uses before its centre crop."""
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


def check_clip_args(start: float, num_frames: int, fps: float, image_size: int) -> None:
    """The argument checks of :func:`decode_clip`, shared by every decoder (ValueError)."""
    if not np.isfinite(start) or start < 0:
        raise ValueError(f"start must be a finite number of seconds >= 0, got {start}")
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be an int >= 1, got {image_size!r}")


def _to_rgb_crop(frame: VideoFrame, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size``, then centre crop: uint8 (size, size, 3) RGB.

    One swscale call converts YUV to RGB and resizes with its bilinear filter, which widens with
    the downscaling factor (antialiased, like ``torch.nn.functional.interpolate(mode="bilinear",
    antialias=True)``, within about 1/255 on average). It is ~5x faster than converting the
    full-size frame to RGB and resizing with torch. (swscale's "area" filter aliases at
    non-integer factors; its "fast bilinear" does not antialias.)
    """
    new_w, new_h = resized_size(frame.width, frame.height, size)
    resized = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation="BILINEAR")
    rgb = resized.to_ndarray()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return rgb[top : top + size, left : left + size]


def _select_after_seek(
    container: InputContainer,
    stream: VideoStream,
    targets: list[Fraction],
    size: int,
    seek_time: Fraction | None,
    name: str,
) -> list[np.ndarray] | None:
    """Decode forward from ``seek_time``; return the converted nearest frame for each target.

    Returns None when a seek to a time after the stream start landed after ``targets[0]`` (so the
    frame just before it was never decoded); the caller seeks earlier and tries again.
    """
    chosen: list[np.ndarray] = []
    previous: tuple[Fraction, Fraction, VideoFrame] | None = None
    last_taken: VideoFrame | None = None

    def take(frame: VideoFrame) -> None:
        nonlocal last_taken
        # Targets increase, so a frame can only serve consecutive targets: convert it once.
        chosen.append(chosen[-1] if frame is last_taken else _to_rgb_crop(frame, size))
        last_taken = frame

    for time, end, frame in _iter_frames(container, stream, seek_time, name, targets):
        if previous is None and time > targets[0] and seek_time:
            return None
        while len(chosen) < len(targets) and targets[len(chosen)] <= time:
            target = targets[len(chosen)]
            if previous is not None and target - previous[0] <= time - target:
                take(previous[2])
            else:
                take(frame)
        if len(chosen) == len(targets):
            return chosen
        previous = (time, end, frame)
    # The decodable stream ended: targets within the last frame's display time still map to it.
    while previous is not None and len(chosen) < len(targets) \
            and targets[len(chosen)] <= previous[1] + _END_TOLERANCE_S:
        take(previous[2])
    if len(chosen) < len(targets):
        reached = f"the decodable stream ends at {float(previous[1]):.3f} s" if previous else \
            f"no frame decodes from {float(seek_time or 0):.3f} s on"
        raise VideoDecodeError(
            f"{name!r}: produced {len(chosen)} of {len(targets)} frames: {reached}, "
            f"but the clip needs a frame at {float(targets[len(chosen)]):.3f} s"
        )
    return chosen


def frame_indices(info: VideoInfo, start: float, num_frames: int, fps: float) -> list[int]:
    """Frame numbers of a clip for decoders that address frames by index (OpenCV, DALI).

    The rule of :func:`decode_clip` on the stream's nominal grid (frame ``i`` shown at
    ``i / info.fps``): clip frame ``k`` is the frame nearest to ``start + k / fps``, a tie goes to
    the earlier frame, and targets past the last frame map to it. For constant-frame-rate video
    this gives the frames :func:`decode_clip` picks, except for targets within the container's
    timestamp rounding (WebM: 1 ms) of midway between two frames; for variable-rate video it is
    approximate.
    """
    src, step = Fraction(info.fps), 1 / Fraction(fps)
    last = max(info.num_frames - 1, 0)
    indices = []
    for k in range(num_frames):
        position = (Fraction(start) + k * step) * src  # in source frames
        index = math.ceil(position - Fraction(1, 2))  # nearest, ties down
        indices.append(min(max(index, 0), last))
    return indices


def decode_clip(
    path: str | os.PathLike[str] | TarMember, start: float, num_frames: int, fps: float, image_size: int
) -> torch.Tensor:
    """Decode ``num_frames`` frames sampled at ``fps`` from ``start`` seconds, as square RGB images.

    Frame ``k`` is the decoded frame whose timestamp is nearest to ``start + k / fps`` (ties go
    to the earlier frame; see the module docstring). The decoder seeks once to the keyframe at or
    before ``start`` and decodes forward; only chosen frames are converted. Each is resized so its
    shorter side is ``image_size`` (antialiased bilinear, see :func:`_to_rgb_crop`) and
    centre-cropped to ``image_size x image_size``.

    Args:
        path: the video file or tar member.
        start: time of the first frame, in seconds from the first frame of the stream (>= 0).
        num_frames: T, frames in the clip (>= 1).
        fps: sampling rate of the clip, frames per second (> 0).
        image_size: S, output side in pixels (>= 1).

    Returns:
        uint8 tensor (T, 3, S, S), RGB.

    Raises:
        ValueError: invalid arguments.
        VideoDecodeError: the file cannot be opened, or fewer than T frames can be produced (the
            clip runs past the end of the decodable stream, or the data is corrupt mid-stream).
    """
    check_clip_args(start, num_frames, fps, image_size)
    first, step = Fraction(start), 1 / Fraction(fps)
    targets = [first + k * step for k in range(num_frames)]
    container, stream = _open(path)
    with container:
        seek_time = targets[0] if targets[0] > 0 else None
        backoff = _SEEK_BACKOFF_S
        while (images := _select_after_seek(container, stream, targets, image_size, seek_time,
                                                 video_name(path))) \
                is None:
            seek_time = max(Fraction(0), targets[0] - backoff)
            backoff *= 2
    # numpy's transposing copy: torch's permute().contiguous() of uint8 is ~50x slower here.
    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))

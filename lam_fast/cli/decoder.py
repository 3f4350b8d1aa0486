"""``lam-fast train-decoder --ckpt RUN --data DIR_OR_CSV [--out RUN/decoder] [--json OUT.json]``.

Trains a :class:`~lam_fast.models.decoder.StateDecoder` from the run's frozen encoder states back to
pixels, to look at decoded predictions. Decodes up to ``--clips`` clips of the run's length, frame
rate and size from ``--data`` (unreadable ones are skipped), encodes them once, holds out ~20% of
the clips (at least one), trains with L1 on the rest and reports on the held-out frames: ``l1``,
``psnr`` (dB), ``ssim``, ``lpips`` (null with ``lpips_reason`` when LPIPS cannot run offline), and
for the ``pixels`` encoder ``inverse_psnr``, the PSNR of its exact inverse (a sanity number: float
round-off only; null if the round trip is exact). The decoder goes to ``--out`` (default
``RUN/decoder``, where :func:`~lam_fast.models.decoder.load_decoder` finds it) with the metrics in
its ``decoder.json``; ``--json`` writes the same metrics to another file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from lam_fast.cli.errors import load_world_model, run_command
from lam_fast.io import write_text_atomic


def _clips(cfg, data: str, clips: int, seed: int) -> list[torch.Tensor]:
    from lam_fast.cli.eval import load_clips

    return load_clips(cfg, data, clips, seed, minimum=2, why="one clip is held out")[0]


@torch.no_grad()
def _encode(encoder, videos: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    return torch.cat([encoder.encode(videos[i:i + batch_size].to(device)).cpu()
                      for i in range(0, videos.shape[0], batch_size)])


@torch.no_grad()
def _decode(decoder, encoder, states: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    from lam_fast.models.decoder import decode_to_pixels

    return torch.cat([decode_to_pixels(states[i:i + batch_size].to(device), encoder, decoder).cpu()
                      for i in range(0, states.shape[0], batch_size)])


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lam-fast train-decoder",
                                     description="train a decoder from the run's encoder states to pixels")
    parser.add_argument("--ckpt", required=True, help="run directory (its latest checkpoint) or a checkpoint directory")
    parser.add_argument("--data", required=True, help="videos: folder, CSV, shards")
    parser.add_argument("--out", type=Path, default=None, help="decoder directory (default CKPT/decoder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8, help="clips per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clips", type=int, default=64, help="clips to decode (~20%% held out)")
    parser.add_argument("--depth", type=int, default=None, help="decoder blocks (default 2)")
    parser.add_argument("--width", type=int, default=None, help="decoder width (default 128)")
    parser.add_argument("--heads", type=int, default=None, help="decoder heads (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="clip start-time, split, init and batch seed")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.clips < 2:
        parser.error("--clips must be >= 2 (at least one clip is held out)")
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be positive")

    from lam_fast.eval.image_metrics import l1, lpips_available, lpips_distance, psnr, ssim
    from lam_fast.models.config import TransformerConfig
    from lam_fast.models.decoder import (
        DECODER_DIR,
        DEFAULT_DECODER_CONFIG,
        StateDecoder,
        pixel_encoder_inverse,
        save_decoder,
    )
    from lam_fast.training.decoder import fit_decoder

    model, encoder, cfg = load_world_model(args.ckpt, args.device)
    del model  # only the frozen encoder is needed
    out = args.out if args.out is not None else Path(args.ckpt) / DECODER_DIR
    videos = torch.stack(_clips(cfg, args.data, args.clips, args.seed))  # (M, T, 3, S, S) uint8
    states = _encode(encoder, videos, args.batch_size, args.device)  # (M, T / frames_per_state, N, C), CPU

    order = torch.randperm(videos.shape[0], generator=torch.Generator().manual_seed(args.seed))
    held = max(1, round(0.2 * videos.shape[0]))
    test_idx, train_idx = order[:held], order[held:]

    dcfg = TransformerConfig(args.depth or DEFAULT_DECODER_CONFIG.depth, args.width or DEFAULT_DECODER_CONFIG.width,
                             args.heads or DEFAULT_DECODER_CONFIG.heads)
    torch.manual_seed(args.seed)
    decoder = StateDecoder(encoder.dim, encoder.grid, encoder.image_size, dcfg,
                           frames_per_state=encoder.frames_per_state, backend=cfg.backend)
    losses = fit_decoder(decoder, states[train_idx], videos[train_idx], steps=args.steps,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)

    target = videos[test_idx].float() / 255.0
    pred = _decode(decoder, encoder, states[test_idx], args.batch_size, args.device)
    ok, reason = lpips_available()
    metrics = {
        "l1": l1(pred, target), "psnr": _finite_or_none(psnr(pred, target)), "ssim": ssim(pred, target),
        "lpips": lpips_distance(pred.to(args.device), target.to(args.device)) if ok else None,
        "steps": args.steps, "clips_train": len(train_idx), "clips_heldout": len(test_idx),
        "train_l1_first": losses[0], "train_l1_last": losses[-1],
    }
    if not ok:
        metrics["lpips_reason"] = reason
    if encoder.name == "pixels":
        metrics["inverse_psnr"] = _finite_or_none(psnr(pixel_encoder_inverse(states[test_idx], encoder), target))
    metrics.update(encoder=cfg.encoder, image_size=cfg.image_size, num_frames=cfg.num_frames, fps=cfg.fps,
                   ckpt=str(args.ckpt), data=str(args.data), seed=args.seed)
    save_decoder(decoder, out, {"metrics": metrics})
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    shown = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
    inverse = f", exact inverse PSNR {shown(metrics['inverse_psnr'], '.1f')} dB" if "inverse_psnr" in metrics else ""
    print(f"train-decoder: held-out L1 {metrics['l1']:.4f}, PSNR {shown(metrics['psnr'], '.2f')} dB, "
          f"SSIM {metrics['ssim']:.3f}, LPIPS {shown(metrics['lpips'], '.3f')}{inverse} "
          f"({metrics['clips_train']} train / {metrics['clips_heldout']} held-out clips, {args.steps} steps) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("lam-fast train-decoder", main))

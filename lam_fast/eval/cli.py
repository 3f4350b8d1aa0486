"""``lam-fast eval {leakage,transfer} --ckpt RUN_DIR --data DIR_OR_CSV --json OUT.json``.

Loads the run's latest checkpoint (model + the frozen encoder it was trained on), decodes up to
``--clips`` clips of the run's length and frame rate from ``--data`` (clip index i of the dataset,
seed ``--seed``), encodes them and runs the protocol (``lam_fast.eval.protocols``). The JSON holds
the headline numbers under plain keys (``error_original``, ``error_changed`` or
``error_transferred``, ``ratio``) plus per-clip values and where they came from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _states(encoder, cfg, data: str, clips: int, seed: int, device) -> tuple[torch.Tensor, list[str]]:
    from lam_fast.data import VideoClipDataset

    dataset = VideoClipDataset(data, num_frames=cfg.num_frames, fps=cfg.fps, image_size=cfg.image_size, seed=seed)
    videos, names = [], []
    for index in range(len(dataset)):
        if len(videos) == clips:
            break
        item = dataset[index]
        if item is None:  # unreadable: skipped and counted by the dataset
            continue
        videos.append(item["video"])
        names.append(str(dataset.clip_location(index)[0].ref))
    if len(videos) < 2:
        raise SystemExit(f"eval: need at least 2 decodable clips in {data}, found {len(videos)} "
                         f"({len(dataset)} clip slots, {len(dataset.skipped)} files skipped)")
    with torch.no_grad():
        return encoder.encode(torch.stack(videos).to(device)), names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lam-fast eval", description="the paper's evaluation protocols")
    parser.add_argument("protocol", choices=["leakage", "transfer"])
    parser.add_argument("--ckpt", required=True, help="run directory (its latest checkpoint) or a checkpoint directory")
    parser.add_argument("--data", required=True, help="videos: folder, CSV, shards")
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--clips", type=int, default=8, help="clips to evaluate (paired i -> i+1)")
    parser.add_argument("--seed", type=int, default=0, help="clip start-time seed")
    parser.add_argument("--cut", type=int, default=None, help="leakage: frame index of the cut (default T/2)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.clips < 2:
        parser.error("--clips must be >= 2 (clips are paired)")

    from lam_fast.eval import leakage, transfer
    from lam_fast.training.checkpoint import load_world_model

    model, encoder, cfg = load_world_model(args.ckpt, args.device)
    states, names = _states(encoder, cfg, args.data, args.clips, args.seed, args.device)
    if args.protocol == "leakage":
        result = leakage(model, states, cut=args.cut)
    else:
        result = transfer(model, states)
        result.pop("imagined_target")
    result.update(protocol=args.protocol, ckpt=str(args.ckpt), data=str(args.data), clip_sources=names,
                  reg=cfg.reg, encoder=cfg.encoder)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    changed = "error_changed" if args.protocol == "leakage" else "error_transferred"
    print(f"{args.protocol}: error original {result['error_original']:.4f}, {changed.removeprefix('error_')} "
          f"{result[changed]:.4f}, ratio {result['ratio']:.3f} ({states.shape[0]} clips) -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

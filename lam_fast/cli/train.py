"""Command line of ``train/run.py`` (also ``lam-fast train``)."""

from __future__ import annotations

import argparse
import sys

from lam_fast.models.config import PREDICTOR_PRESETS, REG_CHOICES
from lam_fast.training.config import ConfigError, make_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train/run.py",
        description="Train a latent action world model (PAPER.md). Flags override --config, which overrides defaults.",
    )
    a = p.add_argument
    a("--reg", choices=REG_CHOICES, help="latent regulariser (default sparse; none: former name of unconstrained)")
    a("--config", help="YAML file of TrainConfig keys (unknown keys are an error)")
    a("--preset", choices=tuple(PREDICTOR_PRESETS), help="predictor size (default tiny)")
    a("--data", help="folder of videos, CSV list (a 'path' column), WebDataset tar shards (file, folder or "
      "brace pattern) or an encoded-state cache written by `lam-fast encode`")
    a("--decoder", choices=("auto", "pyav", "opencv", "dali"),
      help="video decoder (default auto: DALI on a GPU, else PyAV); ignored for a state cache")
    a("--steps", type=int, help="total optimiser steps of the run, also when resuming")
    a("--out", help="run directory (checkpoints, metrics.jsonl, tensorboard/)")
    a("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    a("--save-every", dest="save_every", type=int)
    a("--keep-last", dest="keep_last", type=int)
    a("--log-every", dest="log_every", type=int)
    a("--lambda-l1", dest="lambda_l1", type=float, help="sparse capacity knob (larger = less information in z)")
    a("--beta", type=float, help="noisy capacity knob (KL weight)")
    a("--codebook-size", dest="codebook_size", type=int, help="discrete capacity knob")
    a("--vq-reset-every", dest="vq_reset_every", type=int, help="reset unused codes every N training videos")
    a("--encoder", choices=("pixels", "effnet", "vjepa2"))
    a("--encoder-model", dest="encoder_model", help="vjepa2: local directory or hub id of the weights")
    a("--patch-size", dest="patch_size", type=int, help="pixels encoder: patch side (default 8)")
    a("--image-size", dest="image_size", type=int)
    a("--num-frames", dest="num_frames", type=int)
    a("--fps", type=float)
    a("--batch-size", dest="batch_size", type=int, help="clips per rank per step")
    a("--num-workers", dest="num_workers", type=int, help="DataLoader decoding processes (default 2; 0 decodes in the training process)")
    a("--seed", type=int)
    a("--engine", choices=("auto", "deepspeed", "local"))
    a("--precision", choices=("auto", "fp32", "bf16"))
    a("--zero-stage", dest="zero_stage", type=int, choices=(0, 1, 2, 3), help="ZeRO stage shortcut")
    a("--deepspeed_config", "--deepspeed-config", dest="deepspeed_config", help="DeepSpeed JSON config")
    a("--local_rank", "--local-rank", dest="local_rank", type=int, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in {"config", "resume", "local_rank"}}
    try:
        cfg = make_config(args.config, **overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from lam_fast.training.loop import NonFiniteLossError, train

    try:
        result = train(cfg, resume=args.resume)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(
            f"done: {cfg.reg} step {result.step}/{cfg.steps}, loss {result.first_loss} -> {result.last_loss}, "
            f"skipped files {result.skipped}, checkpoint {result.checkpoint}"
        )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0

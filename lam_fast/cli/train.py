"""Command line of ``train/run.py`` (also ``lam-fast train``).

A user error (an invalid setting, a missing ``--config`` or ``--data``, a run directory locked by
another run, no intact checkpoint to resume) is one line, ``train/run.py: error: ...`` (``lam-fast
train: error: ...``), and exit 2; ``--debug`` or ``LAM_FAST_DEBUG=1`` shows its traceback
(:mod:`lam_fast.cli.errors`). A NaN/Inf loss is one line and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lam_fast.cli.errors import DEBUG_ENV, DEBUG_FLAG, one_line, run_command
from lam_fast.models.config import PREDICTOR_PRESETS, REG_CHOICES
from lam_fast.training.config import ConfigError, make_config

PROG = "train/run.py"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        epilog=f"{DEBUG_FLAG} (anywhere) or {DEBUG_ENV}=1: the traceback of a user error",
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


def _train(argv: list[str], prog: str) -> int:
    """Parse, build the config, train; user errors propagate (to :func:`run_command`)."""
    args = build_parser(prog).parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in {"config", "resume", "local_rank"}}
    if args.config is not None and not Path(args.config).is_file():
        raise ConfigError(f"--config {args.config}: no such file (expected a YAML file of TrainConfig keys)")
    cfg = make_config(args.config, **overrides)
    from lam_fast.training.loop import NonFiniteLossError, train

    try:
        result = train(cfg, resume=args.resume)
    except NonFiniteLossError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
    """``train/run.py ...``: errors as ``train/run.py: error: ...``."""
    return run_command(PROG, lambda rest: _train(rest, PROG), argv)


def command_main(argv: list[str]) -> int:
    """``lam-fast train ...`` (run through :func:`lam_fast.cli.main.main`'s error path)."""
    return _train(argv, "lam-fast train")

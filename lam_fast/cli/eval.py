"""``lam-fast eval {leakage,transfer} --ckpt RUN_DIR --data DIR_OR_CSV --json OUT.json [--png OUT.png]``
and ``lam-fast eval capacity --ckpt RUN [RUN ...] --baseline DET_RUN --data ... --json OUT.json``.

Loads the run's latest checkpoint (model + the frozen encoder it was trained on), decodes up to
``--clips`` clips of the run's length and frame rate from ``--data`` (clip index i of the dataset,
seed ``--seed``; ``lam_fast.eval.clips``), encodes them and runs the protocol
(``lam_fast.eval.protocols``). The JSON (a record of ``lam_fast.eval.results``) holds the headline
numbers under plain keys (``error_original``, ``error_changed`` or ``error_transferred``,
``ratio``) plus per-clip values and where they came from.

``capacity`` takes several runs (a sweep of lambda_l1, beta or codebook size) and a run trained
with ``--reg deterministic``; all must share encoder, image size, number of frames and frame rate.
Its JSON: ``{"protocol": "capacity", "baseline": {"run", "reg", "error", "per_clip"}, "runs":
[{"run", "reg", "capacity_knob", "knob_value", "error", "rel_to_baseline", "per_clip"}, ...],
"clips", "metric", ...}``.

Every protocol also writes a figure (``--png``, default ``<json stem>.png`` next to the JSON; see
``lam_fast.eval.figures``) and records its path under ``"figure"`` in the JSON, or ``null`` with
``"figure_reason"`` when it cannot be drawn (the transfer figure needs frames decoded from states:
``lam_fast.models.decoder``, which fails for a non-pixel encoder without a trained decoder).

This module only parses arguments and wires the pieces together. A missing checkpoint or data
folder, too few decodable clips or runs that do not fit together are user errors (one line, exit 2:
:mod:`lam_fast.cli.errors`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from lam_fast.cli.errors import load_run, run_command, run_config
from lam_fast.errors import UserError

#: training settings that define the state space and the clips: capacity runs must agree on them
SHARED_KEYS = ("encoder", "encoder_model", "patch_size", "image_size", "num_frames", "fps")


def load_clips(cfg, data: str, clips: int, seed: int, *, minimum: int = 2, why: str = ""
               ) -> tuple[list[torch.Tensor], list[str]]:
    """:func:`lam_fast.eval.clips.load_clips` with a run's ``num_frames`` / ``fps`` /
    ``image_size`` (``cfg``), for a command line: too few clips is a UserError (``why``: a note
    appended to it). ``lam-fast train-decoder`` uses it too."""
    from lam_fast.eval.clips import TooFewClips
    from lam_fast.eval.clips import load_clips as load

    try:
        return load(data, clips, seed, num_frames=cfg.num_frames, fps=cfg.fps, image_size=cfg.image_size,
                    minimum=minimum)
    except TooFewClips as error:
        raise UserError(f"{error}{f' ({why})' if why else ''}") from None


def _states(encoder, cfg, args, minimum: int = 2) -> tuple[torch.Tensor, list[str]]:
    from lam_fast.eval.clips import encode_clips

    videos, names = load_clips(cfg, args.data, args.clips, args.seed, minimum=minimum)
    return encode_clips(encoder, videos, args.device), names


def _check_compatible(runs: list[Path], baseline: Path) -> None:
    """All runs and the baseline must see the same states: UserError naming the first mismatch."""
    configs = {path: run_config(path) for path in [baseline, *runs]}
    if configs[baseline].reg != "deterministic":
        raise UserError(f"--baseline {baseline} was trained with --reg {configs[baseline].reg}, "
                        "expected a run trained with --reg deterministic")
    for path in runs:
        if configs[path].reg == "deterministic":
            raise UserError(f"{path} is a deterministic run; pass it as --baseline, not --ckpt")
        for key in SHARED_KEYS:
            mine, base = getattr(configs[path], key), getattr(configs[baseline], key)
            if mine != base:
                raise UserError(f"{key} differs: {path} has {mine!r}, baseline {baseline} has "
                                f"{base!r} (all runs must share {', '.join(SHARED_KEYS)})")


def _with_figure(result, figure_and_reason: tuple[str | None, str | None]):
    """``result`` with its figure's path, or null and the reason it was not drawn."""
    from lam_fast.eval.results import ABSENT

    figure, reason = figure_and_reason
    return dataclasses.replace(result, figure=figure, figure_reason=reason if figure is None else ABSENT)


def _capacity(args, png: Path):
    from lam_fast.eval import capacity, figures
    from lam_fast.eval.results import CapacityBaseline, CapacityResult, CapacityRun

    runs = [Path(p) for p in args.ckpt]
    _check_compatible(runs, args.baseline)
    cfg, encoder, baseline = load_run(args.baseline, args.device)
    states, names = _states(encoder, cfg, args, minimum=1)
    models = (load_run(run, args.device).model for run in runs)  # one at a time
    numbers = capacity(models, baseline, states)
    result = CapacityResult(
        baseline=CapacityBaseline(run=str(args.baseline), **numbers["baseline"]),
        runs=tuple(CapacityRun(run=str(run), **r) for run, r in zip(runs, numbers["runs"])),
        clips=numbers["clips"], metric=numbers["metric"], data=str(args.data), clip_sources=names,
        encoder=cfg.encoder, image_size=cfg.image_size, num_frames=cfg.num_frames, fps=cfg.fps)
    return _with_figure(result, figures.figure_or_reason(figures.capacity_figure, result, png))


def _paired(args, png: Path):
    """Leakage or transfer on one run."""
    from lam_fast.eval import figures, leakage, transfer
    from lam_fast.eval.results import LeakageResult, TransferResult

    ckpt = args.ckpt[0]
    cfg, encoder, model = load_run(ckpt, args.device)
    states, names = _states(encoder, cfg, args)
    where = dict(ckpt=str(ckpt), data=str(args.data), clip_sources=names, reg=cfg.reg, encoder=cfg.encoder)
    if args.protocol == "leakage":
        result = LeakageResult(**leakage(model, states, cut=args.cut), **where)
        figure = figures.figure_or_reason(figures.leakage_figure, result, png)
    else:
        numbers = transfer(model, states)
        imagined = numbers.pop("imagined_target")
        result = TransferResult(**numbers, **where)
        figure = figures.transfer_figure_from_states(ckpt, encoder, states, imagined, result.targets, names, png)
    return _with_figure(result, figure)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lam-fast eval", description="the paper's evaluation protocols")
    parser.add_argument("protocol", choices=["leakage", "transfer", "capacity"])
    parser.add_argument("--ckpt", required=True, nargs="+",
                        help="run directory (its latest checkpoint) or a checkpoint directory; capacity: several")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="capacity: a run trained with --reg deterministic (no latent)")
    parser.add_argument("--data", required=True, help="videos: folder, CSV, shards")
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--png", type=Path, default=None, help="figure (default: the JSON's path with .png)")
    parser.add_argument("--clips", type=int, default=8, help="clips to evaluate (paired i -> i+1)")
    parser.add_argument("--seed", type=int, default=0, help="clip start-time seed")
    parser.add_argument("--cut", type=int, default=None, help="leakage: frame index of the cut (default T/2)")
    parser.add_argument("--device", default="cpu")
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.protocol == "capacity":
        if args.baseline is None:
            parser.error("capacity needs --baseline DET_RUN (a run trained with --reg deterministic)")
        if args.clips < 1:
            parser.error("--clips must be >= 1")
    else:
        if len(args.ckpt) != 1:
            parser.error(f"{args.protocol} takes one --ckpt, got {len(args.ckpt)}")
        if args.baseline is not None:
            parser.error("--baseline is for eval capacity")
        if args.clips < 2:
            parser.error("--clips must be >= 2 (clips are paired)")
    return args


def _print_capacity(result, json_path: Path) -> None:
    base = result.baseline
    print(f"capacity: baseline {base.run} error {base.error:.4f} ({result.clips} clips)")
    for r in result.runs:
        knob = f"{r.capacity_knob}={r.knob_value:g}" if r.capacity_knob else "no knob"
        print(f"capacity: {r.run} {r.reg} {knob} error {r.error:.4f}, x{r.rel_to_baseline:.3f} of the baseline")
    print(f"capacity: -> {json_path}")


def main(argv: list[str] | None = None) -> int:
    from lam_fast.eval.results import write_result

    args = _parse(argv)
    png = args.png or args.json.with_suffix(".png")
    result = _capacity(args, png) if args.protocol == "capacity" else _paired(args, png)
    write_result(args.json, result)
    if args.protocol == "capacity":
        _print_capacity(result, args.json)
    else:
        print(f"{args.protocol}: error original {result.error_original:.4f}, "
              f"{result.headline.removeprefix('error_')} {result.error_changed_or_transferred:.4f}, "
              f"ratio {result.ratio:.3f} ({result.clips} clips) -> {args.json}")
    figure, reason = result.figure, result.figure_reason
    print(f"{args.protocol}: figure {figure}" if figure else f"{args.protocol}: no figure ({reason})")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("lam-fast eval", main))

"""``lam-fast eval {leakage,transfer} --ckpt RUN_DIR --data DIR_OR_CSV --json OUT.json [--png OUT.png]``
and ``lam-fast eval capacity --ckpt RUN [RUN ...] --baseline DET_RUN --data ... --json OUT.json``.

Loads the run's latest checkpoint (model + the frozen encoder it was trained on), decodes up to
``--clips`` clips of the run's length and frame rate from ``--data`` (clip index i of the dataset,
seed ``--seed``), encodes them and runs the protocol (``lam_fast.eval.protocols``). The JSON holds
the headline numbers under plain keys (``error_original``, ``error_changed`` or
``error_transferred``, ``ratio``) plus per-clip values and where they came from.

``capacity`` takes several runs (a sweep of lambda_l1, beta or codebook size) and a run trained
with ``--reg deterministic``; all must share encoder, image size, number of frames and frame rate.
Its JSON: ``{"protocol": "capacity", "baseline": {"run", "reg", "error", "per_clip"}, "runs":
[{"run", "reg", "capacity_knob", "knob_value", "error", "rel_to_baseline", "per_clip"}, ...],
"clips", "metric", ...}``.

Every protocol also writes a figure (``--png``, default ``<json stem>.png`` next to the JSON; see
``lam_fast.eval.figures``) and records its path under ``"figure"`` in the JSON, or ``null`` with
``"figure_reason"`` when it cannot be drawn (the transfer figure needs frames decoded from states:
``lam_fast.models.decoder``, which fails for a non-pixel encoder without a trained decoder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lam_fast.io import write_json_atomic

#: training settings that define the state space and the clips: capacity runs must agree on them
SHARED_KEYS = ("encoder", "encoder_model", "patch_size", "image_size", "num_frames", "fps")


def load_clips(cfg, data: str, clips: int, seed: int, *, minimum: int = 2, prog: str = "eval"
               ) -> tuple[list[torch.Tensor], list[str]]:
    """Up to ``clips`` decodable clips of the run's length, rate and size from ``data`` (clip index i
    of the dataset, start-time seed ``seed``; unreadable files are skipped and counted) and where
    each came from. SystemExit naming the data when fewer than ``minimum`` decode."""
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
    if len(videos) < minimum:
        raise SystemExit(f"{prog}: need at least {minimum} decodable clips in {data}, found {len(videos)} "
                         f"({len(dataset)} clip slots, {len(dataset.skipped)} files skipped)")
    return videos, names


def _states(encoder, cfg, data: str, clips: int, seed: int, device, minimum: int = 2
            ) -> tuple[torch.Tensor, list[str]]:
    videos, names = load_clips(cfg, data, clips, seed, minimum=minimum)
    with torch.no_grad():
        return encoder.encode(torch.stack(videos).to(device)), names


def _run_config(path: Path):
    """The TrainConfig of a run directory (its latest checkpoint) or of a checkpoint directory."""
    from lam_fast.training.checkpoint import latest_checkpoint
    from lam_fast.training.config import make_config

    directory = path if (path / "model.safetensors").is_file() else latest_checkpoint(path)
    if directory is None:
        raise SystemExit(f"eval: no checkpoint in {path} (expected model.safetensors or checkpoints/)")
    return make_config(directory / "config.yaml")


def _check_compatible(runs: list[Path], baseline: Path) -> None:
    """All runs and the baseline must see the same states: SystemExit naming the first mismatch."""
    configs = {path: _run_config(path) for path in [baseline, *runs]}
    if configs[baseline].reg != "deterministic":
        raise SystemExit(f"eval capacity: --baseline {baseline} was trained with --reg {configs[baseline].reg}, "
                         "expected a run trained with --reg deterministic")
    for path in runs:
        if configs[path].reg == "deterministic":
            raise SystemExit(f"eval capacity: {path} is a deterministic run; pass it as --baseline, not --ckpt")
        for key in SHARED_KEYS:
            mine, base = getattr(configs[path], key), getattr(configs[baseline], key)
            if mine != base:
                raise SystemExit(f"eval capacity: {key} differs: {path} has {mine!r}, baseline {baseline} has "
                                 f"{base!r} (all runs must share {', '.join(SHARED_KEYS)})")


def _figure(draw, *args) -> tuple[str | None, str | None]:
    """Run a figure function: (path, None), or (None, why not) when it fails (matplotlib missing,
    ...): a figure never costs the numbers, which are written either way."""
    try:
        return str(draw(*args)), None
    except ImportError as error:
        return None, f"matplotlib unavailable: {error}"
    except Exception as error:  # noqa: BLE001 - reported in the JSON and on the console
        return None, f"figure failed: {type(error).__name__}: {error}"


def _transfer_png(run: str, encoder, states: torch.Tensor, imagined: torch.Tensor, targets: list[int],
                  names: list[str], png: Path) -> tuple[str | None, str | None]:
    """Frames of clip 0 (A), its target B and B driven by A's latents, decoded from states."""
    try:
        from lam_fast.models.decoder import decode_to_pixels, load_decoder
    except ImportError as error:
        return None, f"no pixel decoder: {error}"
    b = targets[0]
    rows = torch.stack([states[0], states[b], torch.cat([states[b, :1], imagined[0]])])
    try:
        with torch.no_grad():
            pixels = decode_to_pixels(rows, encoder, decoder=load_decoder(run, rows.device))
    except ValueError as error:  # a non-pixel encoder without a trained decoder
        return None, f"cannot decode states to pixels: {error}"
    from lam_fast.eval.figures import transfer_figure

    titles = (f"A: clip 0\n{Path(names[0]).name}", f"B: clip {b}\n{Path(names[b]).name}",
              "B driven by\nA's latents")
    return _figure(lambda path: transfer_figure(pixels[0], pixels[1], pixels[2], path, titles=titles,
                                                suptitle=f"latent action transfer ({run})"), png)


def _capacity(args) -> dict:
    from lam_fast.eval import capacity
    from lam_fast.runs import load_world_model

    runs = [Path(p) for p in args.ckpt]
    _check_compatible(runs, args.baseline)
    baseline, encoder, cfg = load_world_model(args.baseline, args.device)
    states, names = _states(encoder, cfg, args.data, args.clips, args.seed, args.device, minimum=1)
    models = (load_world_model(run, args.device)[0] for run in runs)  # one at a time
    result = capacity(models, baseline, states)
    result["baseline"] = {"run": str(args.baseline), **result["baseline"]}
    result["runs"] = [{"run": str(run), **r} for run, r in zip(runs, result["runs"])]
    result.update(protocol="capacity", data=str(args.data), clip_sources=names, encoder=cfg.encoder,
                  image_size=cfg.image_size, num_frames=cfg.num_frames, fps=cfg.fps)
    return result


def main(argv: list[str] | None = None) -> int:
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
    png = args.png or args.json.with_suffix(".png")

    from lam_fast.eval import figures

    if args.protocol == "capacity":
        result = _capacity(args)
        figure, reason = _figure(figures.capacity_figure, result, png)
    else:
        from lam_fast.eval import leakage, transfer
        from lam_fast.runs import load_world_model

        ckpt = args.ckpt[0]
        model, encoder, cfg = load_world_model(ckpt, args.device)
        states, names = _states(encoder, cfg, args.data, args.clips, args.seed, args.device)
        if args.protocol == "leakage":
            result = leakage(model, states, cut=args.cut)
        else:
            result = transfer(model, states)
            imagined = result.pop("imagined_target")
        result.update(protocol=args.protocol, ckpt=str(ckpt), data=str(args.data), clip_sources=names,
                      reg=cfg.reg, encoder=cfg.encoder)
        if args.protocol == "leakage":
            figure, reason = _figure(figures.leakage_figure, result, png)
        else:
            figure, reason = _transfer_png(ckpt, encoder, states, imagined, result["targets"], names, png)
    result["figure"] = figure
    if figure is None:
        result["figure_reason"] = reason
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, result, indent=2)
    if args.protocol == "capacity":
        base = result["baseline"]
        print(f"capacity: baseline {base['run']} error {base['error']:.4f} ({result['clips']} clips)")
        for r in result["runs"]:
            knob = f"{r['capacity_knob']}={r['knob_value']:g}" if r["capacity_knob"] else "no knob"
            print(f"capacity: {r['run']} {r['reg']} {knob} error {r['error']:.4f}, "
                  f"x{r['rel_to_baseline']:.3f} of the baseline")
        print(f"capacity: -> {args.json}")
    else:
        changed = "error_changed" if args.protocol == "leakage" else "error_transferred"
        print(f"{args.protocol}: error original {result['error_original']:.4f}, {changed.removeprefix('error_')} "
              f"{result[changed]:.4f}, ratio {result['ratio']:.3f} ({states.shape[0]} clips) -> {args.json}")
    print(f"{args.protocol}: figure {figure}" if figure else f"{args.protocol}: no figure ({reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

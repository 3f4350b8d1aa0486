"""PNG figures of the evaluation protocols (matplotlib, Agg backend: no display needed).

* :func:`capacity_figure`: one-step error of each run against its capacity knob, one panel per
  regulariser, the deterministic baseline as a horizontal line (``lam-fast eval capacity``).
* :func:`leakage_figure`: per-clip error without / with the artificial scene cut, and their ratio
  (``lam-fast eval leakage``).
* :func:`transfer_figure`: three rows of frames: source clip A, target clip B, and B driven by A's
  latent actions; :func:`transfer_figure_from_states` decodes those frames from states first
  (``lam-fast eval transfer``).

Every function takes the protocol's result record (:mod:`lam_fast.eval.results`) or frames and an
output path, writes one PNG and returns the path; :func:`figure_or_reason` runs one so that a
figure that cannot be drawn costs only the figure. matplotlib is imported lazily (it is in the
``plot`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from lam_fast.eval.results import CapacityResult, CapacityRun, LeakageResult

#: per knob: axis label, log scale, reverse the axis so that capacity grows to the right
_KNOB_AXES = {
    "lambda_l1": ("lambda_l1 (larger = lower capacity; axis reversed)", True, True),
    "beta": ("beta (larger = lower capacity; axis reversed)", True, True),
    "codebook_size": ("codebook size (larger = higher capacity)", True, False),
}
_REG_COLORS = {"sparse": "tab:blue", "noisy": "tab:orange", "discrete": "tab:green", "unconstrained": "tab:purple",
               "none": "tab:purple"}  # "none": results of runs made before the rename


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def capacity_figure(result: CapacityResult, path: str | Path) -> Path:
    """Error per run against its capacity knob, grouped by regulariser (one log-x panel each, the
    lambda_l1 and beta axes reversed so that capacity grows to the right in every panel), with
    the deterministic baseline as a horizontal line. Runs without a knob (``none``) are a dashed
    line. ``result``: the record of ``lam-fast eval capacity``."""
    plt = _pyplot()
    with_knob: dict[str, list[CapacityRun]] = {}
    without_knob = []
    for run in result.runs:
        if run.capacity_knob and run.knob_value is not None:
            with_knob.setdefault(run.reg, []).append(run)
        else:
            without_knob.append(run)
    regs = sorted(with_knob, key=lambda r: list(_REG_COLORS).index(r) if r in _REG_COLORS else 99) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(regs), figsize=(4.2 * len(regs), 3.6), sharey=True, squeeze=False)
    baseline = result.baseline.error
    for ax, reg in zip(axes[0], regs):
        group = sorted(with_knob.get(reg, []), key=lambda r: r.knob_value)
        if group:
            knob = group[0].capacity_knob
            label, log, reverse = _KNOB_AXES.get(knob, (knob, True, False))
            xs = [r.knob_value for r in group]
            ax.plot(xs, [r.error for r in group], "o-", color=_REG_COLORS.get(reg, "tab:gray"), label=reg)
            for r in group:
                ax.annotate(f"x{r.rel_to_baseline:.2f}", (r.knob_value, r.error), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
            if log and min(xs) > 0:
                ax.set_xscale("log")
            from matplotlib.ticker import FuncFormatter, NullFormatter

            ax.set_xticks(sorted(set(xs)))  # label the swept values only
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            if len(set(xs)) == 1:  # a single value: give the axis some room
                if log and xs[0] > 0:
                    ax.set_xlim(xs[0] / 2, xs[0] * 2)
                else:
                    ax.set_xlim(xs[0] - 1, xs[0] + 1)
            if reverse:
                ax.invert_xaxis()
            ax.set_xlabel(label, fontsize=8)
        ax.set_title(reg)
        ax.axhline(baseline, color="black", linestyle="-", linewidth=1, label="deterministic baseline")
        for run in without_knob:
            ax.axhline(run.error, color=_REG_COLORS.get(run.reg, "tab:gray"), linestyle="--",
                       linewidth=1, label=f"{run.reg} (no knob)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"one-step error\n({result.metric})", fontsize=8)
    fig.suptitle(f"capacity: one-step error with IDM latents, {result.clips} clips (lower = more capacity)",
                 fontsize=9)
    return _save(fig, path)


def leakage_figure(result: LeakageResult, path: str | Path) -> Path:
    """Per-clip error of the frame after the cut without / with the cut (grouped bars), and the
    per-clip ratio (near 1 = z carries the next frame; the paper measures 2-2.5).
    ``result``: the record of ``lam-fast eval leakage``."""
    plt = _pyplot()
    per_clip = result.per_clip
    original = np.asarray(per_clip["error_original"], dtype=float)
    changed = np.asarray(per_clip["error_changed"], dtype=float)
    x = np.arange(len(original))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.bar(x - 0.2, original, width=0.4, label="without cut")
    left.bar(x + 0.2, changed, width=0.4, label="with cut")
    left.set_xlabel("clip")
    left.set_ylabel(result.metric, fontsize=8)
    left.set_xticks(x)
    left.set_title(f"error after the cut (frame {result.cut})", fontsize=9)
    left.legend(fontsize=7)
    ratios = changed / np.maximum(original, 1e-12)
    right.bar(x, ratios, color="tab:red")
    right.axhline(1.0, color="black", linewidth=1, linestyle="--", label="1: leakage")
    right.axhline(result.ratio, color="tab:red", linewidth=1, label=f"ratio of the means {result.ratio:.2f}")
    right.axhspan(2.0, 2.5, color="tab:green", alpha=0.15, label="paper: 2-2.5")
    right.set_xlabel("clip")
    right.set_xticks(x)
    right.set_ylabel("with cut / without")
    right.set_title("ratio", fontsize=9)
    right.legend(fontsize=7)
    fig.suptitle(f"future leakage ({result.reg} {result.ckpt})", fontsize=9)
    return _save(fig, path)


def _frames(frames) -> np.ndarray:
    """(T, 3, H, W) uint8 (0-255) or float (0-1) array or tensor -> (T, H, W, 3) float in [0, 1]."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().float().numpy() if frames.dtype.is_floating_point else frames.detach().cpu().numpy()
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got {array.shape}")
    array = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    return np.clip(array.transpose(0, 2, 3, 1), 0.0, 1.0)


def transfer_figure(source, target, transferred, path: str | Path, *,
                    titles: Sequence[str] = ("source clip A", "target clip B", "B driven by A's latents"),
                    suptitle: str | None = None) -> Path:
    """Three rows of frames: the source clip A, the target clip B and B driven by A's latent
    actions. Each input is (T, 3, H, W), uint8 in 0-255 or float in [0, 1], numpy or torch; rows
    may differ in length (missing frames are blank). ``titles``: the three row labels."""
    plt = _pyplot()
    rows = [_frames(f) for f in (source, target, transferred)]
    if len(titles) != 3:
        raise ValueError(f"titles must name the 3 rows, got {list(titles)}")
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(3, cols, figsize=(1.3 * cols + 1.2, 4.4), squeeze=False)
    for i, (row, title) in enumerate(zip(rows, titles)):
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
            if i == 0:
                ax.set_title(f"t={j}", fontsize=7)
        axes[i][0].set_ylabel(title, fontsize=8, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, path)


def transfer_figure_from_states(run: str, encoder, states: torch.Tensor, imagined: torch.Tensor,
                                targets: list[int], names: list[str], path: str | Path
                                ) -> tuple[str | None, str | None]:
    """The :func:`transfer_figure` of a transfer evaluation: clip 0 (A), its target B and B driven
    by A's latents (``imagined``), decoded from states by the run's decoder or the encoder's exact
    inverse. ``(path, None)``, or ``(None, why not)`` when the states cannot be decoded (a
    non-pixel encoder without a trained decoder) or the figure cannot be drawn."""
    from lam_fast.models.decoder import decode_to_pixels, load_decoder

    b = targets[0]
    rows = torch.stack([states[0], states[b], torch.cat([states[b, :1], imagined[0]])])
    try:
        with torch.no_grad():
            pixels = decode_to_pixels(rows, encoder, decoder=load_decoder(run, rows.device))
    except ValueError as error:  # a non-pixel encoder without a trained decoder
        return None, f"cannot decode states to pixels: {error}"
    titles = (f"A: clip 0\n{Path(names[0]).name}", f"B: clip {b}\n{Path(names[b]).name}",
              "B driven by\nA's latents")
    return figure_or_reason(lambda out: transfer_figure(pixels[0], pixels[1], pixels[2], out, titles=titles,
                                                        suptitle=f"latent action transfer ({run})"), path)


def figure_or_reason(draw: Callable[..., Path], *args) -> tuple[str | None, str | None]:
    """Run a figure function: ``(path, None)``, or ``(None, why not)`` when it fails (matplotlib
    missing, ...): a figure never costs the numbers, which are written either way."""
    try:
        return str(draw(*args)), None
    except ImportError as error:
        return None, f"matplotlib unavailable: {error}"
    except Exception as error:  # noqa: BLE001 - reported in the JSON and on the console
        return None, f"figure failed: {type(error).__name__}: {error}"

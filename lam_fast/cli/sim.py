"""``lam-fast sim generate ...`` / ``lam-fast sim info DIR``: action-labelled MuJoCo video
(:mod:`lam_fast.envs`; the files are described in :mod:`lam_fast.envs.episodes`)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from lam_fast.cli.errors import run_command, user_errors
from lam_fast.envs import SIM_TASKS, generate, load_episodes


def _info(directory: str) -> int:
    info, meta, episodes = load_episodes(directory)
    counts = sorted({len(e.frames) for e in episodes})
    print(f"task: {info.name} ({info.description})")
    print(f"episodes: {len(episodes)} loaded, {len(meta['skipped'])} skipped"
          + (f" ({', '.join(meta['skipped'])})" if meta["skipped"] else ""))
    print(f"frames per episode: {', '.join(map(str, counts)) or '-'}; image size {meta.get('image_size')}; "
          f"fps {meta.get('fps')}; seed {meta.get('seed')}; mujoco {meta.get('mujoco_version')}")
    if not episodes:
        return 1
    actions = np.concatenate([e.actions for e in episodes]).astype(np.float64)
    poses = np.concatenate([e.poses for e in episodes]).astype(np.float64)
    print(f"actions: {len(actions)}")
    for k, name in enumerate(info.action_names):
        column = actions[:, k]
        print(f"  {name:10s} mean {column.mean():+.4f}  std {column.std():.4f}  min {column.min():+.4f}  "
              f"max {column.max():+.4f}  bounds [{info.action_low[k]}, {info.action_high[k]}]")
    print("poses:")
    for k, name in enumerate(info.pose_names):
        column = poses[:, k]
        print(f"  {name:10s} min {column.min():+.4f}  max {column.max():+.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``lam-fast sim generate ...`` / ``lam-fast sim info DIR`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="lam-fast sim",
                                     description="action-labelled MuJoCo video (reacher, nav)")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("generate", help="render episodes into a folder (mp4 + npz + meta.json)")
    make.add_argument("--task", required=True, choices=SIM_TASKS)
    make.add_argument("--episodes", type=int, required=True)
    make.add_argument("--frames", type=int, required=True, help="frames per episode")
    make.add_argument("--out", required=True, help="output folder")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--image-size", type=int, default=64)
    make.add_argument("--fps", type=float, default=4.0)
    show = sub.add_parser("info", help="task, counts and action statistics of a generated folder")
    show.add_argument("directory")
    args = parser.parse_args(argv)
    # bad settings (ValueError), a folder that is not a sim dataset, no renderer (RenderUnavailable)
    with user_errors(ValueError, FileNotFoundError, RuntimeError):
        if args.command == "info":
            return _info(args.directory)

        def report(done: int, total: int) -> None:
            if done == total or done % max(1, total // 10) == 0:
                print(f"{done}/{total} episodes", file=sys.stderr)

        videos = generate(args.task, args.out, episodes=args.episodes, frames=args.frames, seed=args.seed,
                          image_size=args.image_size, fps=args.fps, progress=report)
    print(f"{len(videos)} episodes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("lam-fast sim", main))

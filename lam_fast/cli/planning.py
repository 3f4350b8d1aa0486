"""Commands on the action-labelled sim tasks (``lam-fast sim generate``):

- ``lam-fast train-controller --ckpt RUN --data SIM_DIR --out DIR --json OUT.json [--kind cross|mlp]``
- ``lam-fast train-action-model --data SIM_DIR --out DIR [--like RUN] --json OUT.json``
- ``lam-fast plan --data SIM_DIR --json OUT.json --policy latent|action|random [--ckpt RUN|DIR] [--controller DIR]``

This module only reads arguments and calls: the split, the protocols and the metrics are in
:mod:`lam_fast.eval.sim_planning`, the fitting in :mod:`lam_fast.training.controller` and
:mod:`lam_fast.training.action_model`, the saved modules in :mod:`lam_fast.training.fitted`.
The result files are :mod:`lam_fast.eval.results` records (``controller``, ``action_model``, ``plan``).
A folder that is not a sim dataset, a run without a checkpoint or a folder without the controller or
action model asked for is a user error (one line, exit 2: :mod:`lam_fast.cli.errors`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lam_fast.cli.errors import load_world_model, run_command


def _write_result(path: Path, payload: dict) -> None:
    """Write ``payload`` as the result record of its ``protocol`` (checked: every key known)."""
    from lam_fast.eval.results import result_from_dict, write_result

    write_result(path, result_from_dict(payload, str(path)))


def _load(data: str, heldout: float):
    from lam_fast.envs import load_episodes
    from lam_fast.eval.sim_planning import split_episodes

    info, meta, episodes = load_episodes(data)
    train, held = split_episodes(episodes, heldout)
    return info, meta, train, held


def _encode_split(encoder, train, held, info, device):
    """(train states, train actions, held-out states, held-out actions), actions in [-1, 1]."""
    from lam_fast.eval.sim_planning import encode_episodes

    return (*encode_episodes(encoder, train, info, device), *encode_episodes(encoder, held, info, device))


def _controller_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lam-fast train-controller",
                                     description="fit a controller from real actions to a run's IDM latents (PAPER.md s.4)")
    parser.add_argument("--ckpt", required=True, help="latent-action world model run (its latest checkpoint)")
    parser.add_argument("--data", required=True, help="sim dataset folder (lam-fast sim generate)")
    parser.add_argument("--out", required=True, type=Path, help="folder for controller.safetensors/.json")
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--kind", choices=["cross", "mlp"], default="cross",
                        help="cross: cross-attention over s_{t-1}'s tokens (the paper's); mlp: actions only")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=300, help="warm-up steps")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rollout-steps", type=int, default=4, help="length of the evaluation rollouts")
    parser.add_argument("--heldout", type=float, default=0.25, help="fraction of episodes held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser


def train_controller_main(argv: list[str] | None = None) -> int:
    parser = _controller_parser()
    args = parser.parse_args(argv)

    from lam_fast.eval.sim_planning import controller_latent_fit, controller_rollout_errors
    from lam_fast.training.controller import ControllerTraining, controller_dataset, train_controller
    from lam_fast.training.fitted import build_controller, save_module

    settings = ControllerTraining(steps=args.steps, lr=args.lr, warmup_steps=min(args.warmup, args.steps - 1),
                                  batch_size=args.batch_size, seed=args.seed)
    model, encoder, cfg = load_world_model(args.ckpt, args.device)
    if not model.has_latent:
        parser.error(f"{args.ckpt} is a deterministic run: it has no latent actions to control")
    info, meta, train, held = _load(args.data, args.heldout)
    start = time.perf_counter()
    train_states, train_actions, held_states, held_actions = _encode_split(encoder, train, held, info, args.device)
    actions, states, targets = controller_dataset(model, train_states, train_actions)
    ctrl_meta = {"kind": args.kind, "action_dim": actions.shape[1], "state_dim": encoder.dim,
                 "num_tokens": encoder.num_tokens, "latent_dim": targets.shape[1],
                 "width": args.width, "heads": args.heads, "task": info.name, "ckpt": str(args.ckpt)}
    torch.manual_seed(args.seed)
    controller = build_controller(ctrl_meta).to(args.device)
    cross = args.kind == "cross"
    losses = train_controller(controller, actions, states if cross else None, targets, settings)
    h_actions, h_states, h_targets = controller_dataset(model, held_states, held_actions)
    latent_fit = controller_latent_fit(controller, h_actions, h_states if cross else None, h_targets)
    result = controller_rollout_errors(model, controller, held_states, held_actions, args.rollout_steps)
    result.update(kind=args.kind, task=info.name, ckpt=str(args.ckpt), data=str(args.data), reg=cfg.reg,
                  controller=str(args.out), steps=args.steps, loss_first=losses[0], loss_final=losses[-1],
                  **latent_fit, episodes_train=len(train), episodes_heldout=len(held),
                  transitions_train=int(actions.shape[0]), seconds=time.perf_counter() - start, protocol="controller")
    ctrl_meta.update({k: result[k] for k in ("rollout_error_idm", "rollout_error_controller", "heldout_r2")})
    save_module(args.out, "controller", controller, ctrl_meta)
    _write_result(args.json, result)
    print(f"controller ({args.kind}, {info.name}): loss {losses[0]:.4f} -> {losses[-1]:.4f}; held-out latent R^2 "
          f"{result['heldout_r2']:.3f}; {args.rollout_steps}-step rollout error IDM z {result['rollout_error_idm']:.4f}, "
          f"controller z {result['rollout_error_controller']:.4f} (x{result['ratio']:.2f}; copy "
          f"{result['rollout_error_copy']:.4f}) -> {args.json}")
    return 0


def _action_model_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lam-fast train-action-model",
                                     description="the action-conditioned baseline world model (same predictor, AdaLN on the real action)")
    parser.add_argument("--data", required=True, help="sim dataset folder (lam-fast sim generate)")
    parser.add_argument("--out", required=True, type=Path, help="folder for action_model.safetensors/.json")
    parser.add_argument("--json", type=Path, default=None, help="results (default OUT/eval/action_model.json)")
    parser.add_argument("--like", default=None,
                        help="latent-action run whose encoder and predictor preset to copy (recommended: same predictor)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--encoder", default="pixels")
    parser.add_argument("--patch-size", type=int, default=None, help="pixels encoder only (default 8)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--lr", type=float, default=6.25e-4)
    parser.add_argument("--heldout", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser


def _action_model_encoder(parser, args, meta: dict):
    """(encoder, its name, options, image size, predictor preset): the ``--like`` run's, or the flags'.

    The options are recorded with the encoder's defaults filled in (``{"patch_size": 8}`` for
    pixels), as a run's config records them."""
    from lam_fast.models.encoders import build_encoder, encoder_options, normalize_encoder_options

    if args.like:
        if args.patch_size is not None:
            parser.error("--patch-size does not apply with --like (the run's encoder is used)")
        _, encoder, like = load_world_model(args.like, args.device)
        return encoder, like.encoder, like.encoder_options(), like.image_size, like.preset
    try:
        options = normalize_encoder_options(args.encoder, encoder_options(args.encoder, patch_size=args.patch_size))
    except ValueError as error:
        parser.error(str(error))
    image_size = int(meta["image_size"])
    return build_encoder(args.encoder, image_size, **options).to(args.device), args.encoder, options, image_size, args.preset


def train_action_model_main(argv: list[str] | None = None) -> int:
    parser = _action_model_parser()
    args = parser.parse_args(argv)

    from lam_fast.eval.sim_planning import one_step_error
    from lam_fast.models import ActionConditionedWorldModel, ModelConfig
    from lam_fast.training.action_model import ActionModelTraining, train_action_model
    from lam_fast.training.fitted import save_module

    settings = ActionModelTraining(steps=args.steps, batch_size=args.batch_size, num_frames=args.num_frames,
                                   lr=args.lr, seed=args.seed)
    info, meta, train, held = _load(args.data, args.heldout)
    encoder, enc_name, enc_options, image_size, preset = _action_model_encoder(parser, args, meta)
    start = time.perf_counter()
    train_states, train_actions, held_states, held_actions = _encode_split(encoder, train, held, info, args.device)
    torch.manual_seed(args.seed)
    cfg = ModelConfig(reg="deterministic", preset=preset)
    model = ActionConditionedWorldModel(cfg, state_dim=encoder.dim, grid=encoder.grid,
                                        action_dim=len(info.action_names)).to(args.device)
    losses = train_action_model(model, train_states, train_actions, settings)
    result = one_step_error(model, held_states, held_actions)
    result.update(protocol="action_model", task=info.name, data=str(args.data), steps=args.steps,
                  loss_first=losses[0], loss_final=losses[-1], episodes_train=len(train), episodes_heldout=len(held),
                  seconds=time.perf_counter() - start)
    model_meta = {"encoder": enc_name, "encoder_options": enc_options, "image_size": image_size, "preset": preset,
                  "residual": cfg.residual, "action_dim": len(info.action_names), "task": info.name,
                  "action_names": list(info.action_names), **{k: result[k] for k in ("one_step_error", "rel_to_copy")}}
    save_module(args.out, "action_model", model, model_meta)
    _write_result(args.json or args.out / "eval" / "action_model.json", result)
    print(f"action model ({info.name}): loss {losses[0]:.4f} -> {losses[-1]:.4f}; held-out one-step error "
          f"{result['one_step_error']:.4f} ({result['rel_to_copy']:.3f} x copy) -> {args.out}")
    return 0


def _plan_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lam-fast plan",
                                     description="plan on the held-out episodes of a sim task and score the plans")
    parser.add_argument("--data", required=True, help="sim dataset folder (lam-fast sim generate)")
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--policy", choices=["latent", "action", "random"], default=None,
                        help="default: action if --ckpt holds an action model, else latent")
    parser.add_argument("--ckpt", default=None, help="latent-action run, or a train-action-model folder")
    parser.add_argument("--controller", default=None, help="latent policy: folder of lam-fast train-controller")
    parser.add_argument("--method", choices=["cem", "mppi"], default=None)
    for name in ("samples", "elites", "iterations", "horizon", "hold"):
        parser.add_argument(f"--{name}", type=int, default=None, help="default: the task's protocol")
    parser.add_argument("--temperature", type=float, default=1.0, help="MPPI temperature")
    parser.add_argument("--problems", type=int, default=64, help="(episode, start) planning problems")
    parser.add_argument("--batch", type=int, default=8, help="problems planned at once")
    parser.add_argument("--heldout", type=float, default=0.25)
    parser.add_argument("--no-cache", action="store_true", help="recompute rollouts instead of the KV cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser


def _plan_policy(parser, args) -> str:
    """The policy asked for, or the one ``--ckpt`` holds; refuses a policy without what it needs."""
    policy = args.policy
    if policy is None:
        if args.ckpt is None:
            parser.error("pass --policy random, or --ckpt")
        policy = "action" if (Path(args.ckpt) / "action_model.json").is_file() else "latent"
    if policy != "random" and args.ckpt is None:
        parser.error(f"--policy {policy} needs --ckpt")
    if policy == "latent" and args.controller is None:
        parser.error("--policy latent needs --controller (lam-fast train-controller --out DIR)")
    return policy


def _plan_models(parser, args, policy: str, task: str):
    """(model, encoder, controller) of the policy, each None where it takes none."""
    from lam_fast.training.fitted import load_action_model, load_controller

    if policy == "latent":
        controller, ctrl_meta = load_controller(args.controller, args.device)  # the quick check first
        model, encoder, _ = load_world_model(args.ckpt, args.device)
        if ctrl_meta["task"] != task:
            parser.error(f"the controller was trained on task {ctrl_meta['task']!r}, the data is {task!r}")
        return model, encoder, controller
    if policy == "action":
        model, encoder, model_meta = load_action_model(args.ckpt, args.device)
        if model_meta["task"] != task:
            parser.error(f"the action model was trained on task {model_meta['task']!r}, the data is {task!r}")
        return model, encoder, None
    return None, None, None


def plan_main(argv: list[str] | None = None) -> int:
    parser = _plan_parser()
    args = parser.parse_args(argv)

    from lam_fast.eval.results import PlanResult
    from lam_fast.eval.sim_planning import PLAN_DEFAULTS, PlanSettings, plan

    info, meta, _, held = _load(args.data, args.heldout)
    policy = _plan_policy(parser, args)
    defaults = dict(PLAN_DEFAULTS[info.name])
    chosen = {k: getattr(args, k) for k in ("method", "samples", "elites", "iterations", "horizon", "hold")}
    defaults.update({k: v for k, v in chosen.items() if v is not None})
    settings = PlanSettings(**defaults, problems=args.problems, batch=args.batch, temperature=args.temperature,
                            seed=args.seed)
    model, encoder, controller = _plan_models(parser, args, policy, info.name)
    start = time.perf_counter()
    result = plan(policy, info.name, info, held, settings, model=model, encoder=encoder, controller=controller,
                  device=args.device, use_cache=not args.no_cache)
    result.update(protocol="plan", data=str(args.data), ckpt=args.ckpt, controller=args.controller,
                  seconds=time.perf_counter() - start)
    _write_result(args.json, result)
    print(f"plan ({info.name}, {policy}, {result['method']}): " +
          ", ".join(f"{k} {result[k]:.4f}" for k in PlanResult.TASK_METRICS[info.name]) +
          f" over {result['problems']} problems in {result['seconds']:.1f} s -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("lam-fast plan", plan_main))

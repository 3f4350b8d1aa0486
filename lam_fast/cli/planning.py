"""Commands on the action-labelled sim tasks (``lam-fast sim generate``):

- ``lam-fast train-controller --ckpt RUN --data SIM_DIR --out DIR --json OUT.json [--kind cross|mlp]``
- ``lam-fast train-action-model --data SIM_DIR --out DIR [--like RUN] --json OUT.json``
- ``lam-fast plan --data SIM_DIR --json OUT.json --policy latent|action|random [--ckpt RUN|DIR] [--controller DIR]``

See ``lam_fast.planning.sim`` for the split, the protocols and the metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lam_fast.io import write_json_atomic


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, payload, sort_keys=True)


def _load(data: str, heldout: float):
    from lam_fast.data.sim import load_episodes
    from lam_fast.planning.sim import split_episodes

    info, meta, episodes = load_episodes(data)
    train, held = split_episodes(episodes, heldout)
    return info, meta, train, held


def _encode_all(encoder, episodes, info, device):
    from lam_fast.planning.sim import encode_episode, normalise_actions

    states = [encode_episode(encoder, ep.frames, device) for ep in episodes]
    actions = [normalise_actions(ep.actions, info).to(device) for ep in episodes]
    return states, actions


def train_controller_main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)

    from lam_fast.planning.sim import build_controller, controller_dataset, controller_rollout_errors, save_module
    from lam_fast.runs import load_world_model
    from lam_fast.training.controller import ControllerTraining, train_controller

    settings = ControllerTraining(steps=args.steps, lr=args.lr, warmup_steps=min(args.warmup, args.steps - 1),
                                  batch_size=args.batch_size, seed=args.seed)
    model, encoder, cfg = load_world_model(args.ckpt, args.device)
    if not model.has_latent:
        parser.error(f"{args.ckpt} is a deterministic run: it has no latent actions to control")
    info, meta, train, held = _load(args.data, args.heldout)
    start = time.perf_counter()
    train_states, train_actions = _encode_all(encoder, train, info, args.device)
    held_states, held_actions = _encode_all(encoder, held, info, args.device)
    actions, states, targets = controller_dataset(model, train_states, train_actions)
    ctrl_meta = {"kind": args.kind, "action_dim": actions.shape[1], "state_dim": encoder.dim,
                 "num_tokens": encoder.num_tokens, "latent_dim": targets.shape[1],
                 "width": args.width, "heads": args.heads, "task": info.name, "ckpt": str(args.ckpt)}
    torch.manual_seed(args.seed)
    controller = build_controller(ctrl_meta).to(args.device)
    losses = train_controller(controller, actions, states if args.kind == "cross" else None, targets, settings)
    h_actions, h_states, h_targets = controller_dataset(model, held_states, held_actions)
    with torch.no_grad():
        h_pred = controller(h_actions, h_states if args.kind == "cross" else None)
        latent_l2 = (h_pred - h_targets).pow(2).sum(1).mean().item()
        latent_var = (h_targets - h_targets.mean(0)).pow(2).sum(1).mean().item()
    result = controller_rollout_errors(model, controller, held_states, held_actions, args.rollout_steps)
    result.update(kind=args.kind, task=info.name, ckpt=str(args.ckpt), data=str(args.data), reg=cfg.reg,
                  controller=str(args.out), steps=args.steps, loss_first=losses[0], loss_final=losses[-1],
                  heldout_latent_l2=latent_l2, heldout_latent_variance=latent_var,
                  heldout_r2=1.0 - latent_l2 / max(latent_var, 1e-12),
                  episodes_train=len(train), episodes_heldout=len(held), transitions_train=int(actions.shape[0]),
                  seconds=time.perf_counter() - start, protocol="controller")
    ctrl_meta.update({k: result[k] for k in ("rollout_error_idm", "rollout_error_controller", "heldout_r2")})
    save_module(args.out, "controller", controller, ctrl_meta)
    _write_json(args.json, result)
    print(f"controller ({args.kind}, {info.name}): loss {losses[0]:.4f} -> {losses[-1]:.4f}; held-out latent R^2 "
          f"{result['heldout_r2']:.3f}; {args.rollout_steps}-step rollout error IDM z {result['rollout_error_idm']:.4f}, "
          f"controller z {result['rollout_error_controller']:.4f} (x{result['ratio']:.2f}; copy "
          f"{result['rollout_error_copy']:.4f}) -> {args.json}")
    return 0


def train_action_model_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lam-fast train-action-model",
                                     description="the action-conditioned baseline world model (same predictor, AdaLN on the real action)")
    parser.add_argument("--data", required=True, help="sim dataset folder (lam-fast sim generate)")
    parser.add_argument("--out", required=True, type=Path, help="folder for action_model.safetensors/.json")
    parser.add_argument("--json", type=Path, default=None, help="results (default OUT/eval/action_model.json)")
    parser.add_argument("--like", default=None,
                        help="latent-action run whose encoder and predictor preset to copy (recommended: same predictor)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--encoder", default="pixels")
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--lr", type=float, default=6.25e-4)
    parser.add_argument("--heldout", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from lam_fast.models import ActionConditionedWorldModel, ModelConfig
    from lam_fast.models.encoders import build_encoder
    from lam_fast.planning.sim import ActionModelTraining, one_step_error, save_module, train_action_model

    settings = ActionModelTraining(steps=args.steps, batch_size=args.batch_size, num_frames=args.num_frames,
                                   lr=args.lr, seed=args.seed)
    info, meta, train, held = _load(args.data, args.heldout)
    if args.like:
        from lam_fast.runs import load_world_model

        _, encoder, like = load_world_model(args.like, args.device)
        enc_name, enc_options, image_size, preset = like.encoder, like.encoder_options(), like.image_size, like.preset
    else:
        enc_name, image_size, preset = args.encoder, int(meta["image_size"]), args.preset
        enc_options = {"patch_size": args.patch_size} if enc_name == "pixels" else {}
        encoder = build_encoder(enc_name, image_size, **enc_options).to(args.device)
    start = time.perf_counter()
    train_states, train_actions = _encode_all(encoder, train, info, args.device)
    held_states, held_actions = _encode_all(encoder, held, info, args.device)
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
    json_path = args.json or args.out / "eval" / "action_model.json"
    _write_json(json_path, result)
    print(f"action model ({info.name}): loss {losses[0]:.4f} -> {losses[-1]:.4f}; held-out one-step error "
          f"{result['one_step_error']:.4f} ({result['rel_to_copy']:.3f} x copy) -> {args.out}")
    return 0


def plan_main(argv: list[str] | None = None) -> int:
    from lam_fast.planning.sim import PLAN_DEFAULTS

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
    args = parser.parse_args(argv)

    from lam_fast.planning.sim import PlanSettings, load_action_model, load_controller, plan

    info, meta, _, held = _load(args.data, args.heldout)
    policy = args.policy
    if policy is None:
        if args.ckpt is None:
            parser.error("pass --policy random, or --ckpt")
        policy = "action" if (Path(args.ckpt) / "action_model.json").is_file() else "latent"
    if policy != "random" and args.ckpt is None:
        parser.error(f"--policy {policy} needs --ckpt")
    if policy == "latent" and args.controller is None:
        parser.error("--policy latent needs --controller (lam-fast train-controller --out DIR)")
    defaults = dict(PLAN_DEFAULTS[info.name])
    chosen = {k: getattr(args, k) for k in ("method", "samples", "elites", "iterations", "horizon", "hold")}
    defaults.update({k: v for k, v in chosen.items() if v is not None})
    settings = PlanSettings(**defaults, problems=args.problems, batch=args.batch, temperature=args.temperature,
                            seed=args.seed)
    model = encoder = controller = None
    if policy == "latent":
        from lam_fast.runs import load_world_model

        model, encoder, _ = load_world_model(args.ckpt, args.device)
        controller, ctrl_meta = load_controller(args.controller, args.device)
        if ctrl_meta["task"] != info.name:
            parser.error(f"the controller was trained on task {ctrl_meta['task']!r}, the data is {info.name!r}")
    elif policy == "action":
        model, encoder, model_meta = load_action_model(args.ckpt, args.device)
        if model_meta["task"] != info.name:
            parser.error(f"the action model was trained on task {model_meta['task']!r}, the data is {info.name!r}")
    start = time.perf_counter()
    result = plan(policy, info.name, info, held, settings, model=model, encoder=encoder, controller=controller,
                  device=args.device, use_cache=not args.no_cache)
    result.update(protocol="plan", data=str(args.data), ckpt=args.ckpt, controller=args.controller,
                  seconds=time.perf_counter() - start)
    _write_json(args.json, result)
    metrics = {"reacher": ("delta_actions", "end_effector_error"), "nav": ("ate", "rpe")}[info.name]
    print(f"plan ({info.name}, {policy}, {result['method']}): " +
          ", ".join(f"{k} {result[k]:.4f}" for k in metrics) +
          f" over {result['problems']} problems in {result['seconds']:.1f} s -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(plan_main())

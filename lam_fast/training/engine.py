"""Two interchangeable engines behind one small interface.

``LocalEngine``: one process, plain PyTorch (torch.optim.Muon + AdamW); needs no DeepSpeed.
``DeepSpeedEngine``: DeepSpeed (ZeRO 0-3, its Muon-with-auxiliary-Adam optimizer, gloo on CPU,
nccl on GPU), launched by ``deepspeed train/run.py`` or as one process by ``python train/run.py``.
Both use the same parameter split (the groups the model's modules declare, ``lam_fast.nn.optim_groups``),
LR schedule and gradient clipping.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from lam_fast.nn import MUON, optimizer_groups
from lam_fast.training.config import ConfigError, TrainConfig
from lam_fast.training.optim import MuonAdamW, split_params, warmup_cosine

#: Keys of DeepSpeed's ZeRO optimizer state that hold objects rather than tensors and that the
#: optimizer rebuilds from its config on construction (loss scaler, universal-checkpoint maps).
_DERIVED_ZERO_KEYS = ("loss_scaler", "param_slice_mappings", "universal_checkpoint_info")


def _cpu_fp32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copies, floating tensors in fp32 (integer buffers such as VQ usage keep their dtype)."""
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone() for k, v in state.items()}


class LocalEngine:
    name = "local"
    rank, world_size, zero_stage = 0, 1, 0

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device):
        self.module = model.to(device)
        self.device = device
        self.optimizer = MuonAdamW(model, muon_lr=cfg.muon_lr, adamw_lr=cfg.adamw_lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(cfg.steps, cfg.warmup_frac))
        self.grad_clip = cfg.grad_clip
        self._params = [p for part in split_params(model) for p in part]

    def step(self, loss: torch.Tensor) -> float:
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip if self.grad_clip > 0 else float("inf")))
        if math.isfinite(norm):  # a non-finite norm leaves the weights untouched; the loop stops the run
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def learning_rates(self) -> dict[str, float]:
        return {"lr/muon": self.optimizer.param_groups[0]["lr"], "lr/adamw": self.optimizer.param_groups[-1]["lr"]}

    def model_state(self) -> dict[str, torch.Tensor]:
        return _cpu_fp32(self.module.state_dict())

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def optimizer_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_optimizer_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    @torch.no_grad()
    def set_rows(self, param: nn.Parameter, rows: torch.Tensor, values: torch.Tensor) -> None:
        param[rows] = values.to(param.dtype)

    def barrier(self) -> None:
        return None

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        return [float(v) for v in values]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepspeed_config(cfg: TrainConfig, on_gpu: bool) -> dict:
    """DeepSpeed JSON config: the user's ``--deepspeed_config`` file (its keys win), completed with
    the run's batch size, Muon + AdamW optimizer, clipping, ZeRO stage and precision."""
    user: dict = {}
    if cfg.deepspeed_config:
        user = json.loads(Path(cfg.deepspeed_config).read_text())
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and on_gpu)
    ds = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {
            "type": "Muon",
            "params": {
                "muon_lr": cfg.muon_lr,
                "adam_lr": cfg.adamw_lr,
                "weight_decay": cfg.weight_decay,
                "momentum": 0.95,
                "betas": [0.9, 0.95],
            },
        },
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    micro = user.get("train_micro_batch_size_per_gpu", cfg.batch_size)
    if micro != cfg.batch_size:
        raise ConfigError(f"{cfg.deepspeed_config}: train_micro_batch_size_per_gpu={micro} but batch_size="
                          f"{cfg.batch_size}; the data loader reads batch_size clips per rank, set them equal")
    unsupported = {
        "gradient_accumulation_steps": user.get("gradient_accumulation_steps", 1) != 1,
        "fp16": bool(user.get("fp16", {}).get("enabled", False)),
        "scheduler": "scheduler" in user,
    }
    for key, bad in unsupported.items():
        if bad:
            raise ConfigError(f"{cfg.deepspeed_config}: {key!r} is not supported (one optimiser step per batch, "
                              "fp32/bf16, lam_fast's warm-up + cosine schedule)")
    for key, value in user.items():
        if isinstance(value, dict) and isinstance(ds.get(key), dict):
            ds[key] = {**ds[key], **value}
        else:
            ds[key] = value
    if ds["zero_optimization"].get("stage") == 3:
        # DeepSpeed's Muon needs whole gradients before orthogonalising: no reduce-scatter under ZeRO-3
        ds["zero_optimization"].setdefault("reduce_scatter", False)
    return ds


@contextlib.contextmanager
def declared_muon_tags(deepspeed):
    """Inside, ``deepspeed.initialize`` splits Muon / AdamW as the model's modules declared
    (``lam_fast.nn.optim_groups``), not by its own name rule.

    DeepSpeed's ``initialize`` overwrites every parameter's ``use_muon`` tag from the parameter's
    name (a 2-D weight whose name holds "embed" or "lm_head" goes to Adam) before it builds the
    optimizer, so tags set beforehand are lost: the predictor's ``cond_embed`` MLP, declared
    Muon, went to Adam under DeepSpeed while the local engine gave it Muon. Its tagging step
    (``deepspeed.set_optimizer_flags``, called by ``initialize``) still runs, for what else it
    records, and is followed by the declared tags. tests/training/test_deepspeed.py checks the
    optimizer's groups of a DeepSpeed engine against the declarations, so a DeepSpeed release that
    tags elsewhere fails there.
    """
    original = deepspeed.set_optimizer_flags

    def set_flags(config_class, model: nn.Module) -> None:
        original(config_class, model)
        groups = optimizer_groups(model)
        for name, p in model.named_parameters():
            p.use_muon = groups[name] == MUON

    deepspeed.set_optimizer_flags = set_flags
    try:
        yield
    finally:
        deepspeed.set_optimizer_flags = original


class DeepSpeedEngine:
    name = "deepspeed"

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device):
        import deepspeed

        if "RANK" not in os.environ:  # plain `python train/run.py`: one process, no MPI
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(_free_port()))
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = device
        self.config = deepspeed_config(cfg, device.type == "cuda")
        self.zero_stage = int(self.config["zero_optimization"].get("stage", 0))
        if self.config["optimizer"].get("type") != "Muon":
            raise ConfigError("lam_fast trains with DeepSpeed's Muon optimizer; the deepspeed config sets another")
        factor = warmup_cosine(cfg.steps, cfg.warmup_frac)
        with declared_muon_tags(deepspeed):
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model.to(device),
                model_parameters=[p for p in model.parameters() if p.requires_grad],
                config=self.config,
                lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor),
            )
        self.module = self.engine.module

    def step(self, loss: torch.Tensor) -> float:
        self.engine.backward(loss)
        norm = None
        if self.zero_stage == 0:  # DeepSpeed reports the global norm under ZeRO only; grads are all-reduced here
            grads = [p.grad.detach().float().norm() for p in self.module.parameters() if p.grad is not None]
            norm = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
        self.engine.step()
        if norm is None:
            reported = self.engine.get_global_grad_norm()
            norm = float("nan") if reported is None else float(reported)
        return norm

    def learning_rates(self) -> dict[str, float]:
        rates = {}
        for group in self.optimizer.param_groups:
            rates["lr/muon" if group.get("use_muon") else "lr/adamw"] = group["lr"]
        return rates

    def model_state(self) -> dict[str, torch.Tensor]:
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.module.parameters())):
                return _cpu_fp32(self.module.state_dict())
        return _cpu_fp32(self.module.state_dict())

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=0):
                self.module.load_state_dict(state)
        else:
            self.module.load_state_dict(state)

    def optimizer_state(self) -> dict:
        state = self.optimizer.state_dict()
        if isinstance(state, dict):
            state = {k: v for k, v in state.items() if k not in _DERIVED_ZERO_KEYS}
        return {"optimizer": state, "scheduler": self.scheduler.state_dict()}

    def load_optimizer_state(self, state: dict) -> None:
        if self.zero_stage == 0:
            self.optimizer.load_state_dict(state["optimizer"])
        else:
            # ZeRO optimizers take one state per data-parallel rank and read their own entry
            own = dict(state["optimizer"])
            if hasattr(self.optimizer, "loss_scaler"):
                # not saved (an object); fp32/bf16 training has no dynamic loss-scale state to restore
                own.setdefault("loss_scaler", self.optimizer.loss_scaler)
            per_rank = [None] * self.world_size
            per_rank[self.rank] = own
            self.optimizer.load_state_dict(per_rank, load_optimizer_states=True, load_from_fp32_weights=True)
        self.scheduler.load_state_dict(state["scheduler"])

    @torch.no_grad()
    def set_rows(self, param: nn.Parameter, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite rows of a parameter in the model and in the optimizer's fp32 master copy."""
        from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

        full = safe_get_full_fp32_param(param)
        if full is None:
            param[rows] = values.to(param.dtype)
            return
        full = full.clone()
        full[rows] = values.to(full.dtype)
        safe_set_full_fp32_param(param, full)
        if self.zero_stage < 3:
            param[rows] = values.to(param.dtype)
            return
        import deepspeed

        # the partitioned working copy is otherwise refreshed from fp32 only after the next step
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            param[rows] = values.to(param.dtype)

    def barrier(self) -> None:
        dist.barrier()

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def make_engine(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """The engine for ``cfg.engine``: ``auto`` is DeepSpeed when it is installed, else local."""
    if cfg.engine == "local":
        if cfg.zero_stage or cfg.deepspeed_config or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("engine 'local' is one process without ZeRO; use engine 'deepspeed' for zero_stage/"
                              "deepspeed_config/several processes")
        return LocalEngine(model, cfg, device)
    if cfg.engine == "auto":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            if cfg.zero_stage or cfg.deepspeed_config:
                raise ConfigError("zero_stage/deepspeed_config need DeepSpeed: pip install 'lam_fast[dist]'") from None
            return LocalEngine(model, cfg, device)
    return DeepSpeedEngine(model, cfg, device)

"""The fitted small modules on disk: ``DIR/NAME.safetensors`` + ``DIR/NAME.json`` (the metadata
that rebuilds the module), for the controller (``lam-fast train-controller``) and the
action-conditioned baseline (``lam-fast train-action-model``).

The decoder has its own pair (:func:`lam_fast.models.decoder.save_decoder`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lam_fast.errors import UserError
from lam_fast.io import load_weights_with_meta, save_weights_with_meta
from lam_fast.models import ActionConditionedWorldModel, CrossAttentionController, MLPController, ModelConfig
from lam_fast.models.encoders import build_encoder


class MissingModule(UserError, FileNotFoundError):
    """A folder holds no fitted module of the name asked for (the message names the folder and files)."""


def save_module(directory: str | Path, name: str, module: nn.Module, meta: dict) -> Path:
    """``DIR/NAME.safetensors`` then ``DIR/NAME.json`` (the JSON last: a crash mid-save leaves the
    previous pair loadable, or nothing that looks complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights_with_meta(directory / f"{name}.safetensors", directory / f"{name}.json", module.state_dict(), meta)
    return directory


#: the command that writes each module
_WRITER = {"controller": "train-controller", "action_model": "train-action-model"}


def _load_pair(directory: str | Path, name: str) -> tuple[dict, dict]:
    directory = Path(directory)
    meta_path, weights = directory / f"{name}.json", directory / f"{name}.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise MissingModule(f"no {name} in {directory}: expected {meta_path.name} and {weights.name} "
                            f"(written by lam-fast {_WRITER[name]} --out DIR)")
    tensors, meta = load_weights_with_meta(weights, meta_path)
    return meta, tensors


def build_controller(meta: dict) -> nn.Module:
    """A fresh controller from its metadata (``kind`` mlp or cross, its dimensions)."""
    if meta["kind"] == "mlp":
        return MLPController(meta["action_dim"], meta["latent_dim"], hidden=meta.get("width", 256))
    if meta["kind"] == "cross":
        return CrossAttentionController(meta["action_dim"], meta["state_dim"], meta["num_tokens"], meta["latent_dim"],
                                        width=meta["width"], heads=meta["heads"])
    raise ValueError(f"unknown controller kind {meta['kind']!r} (mlp or cross)")


def load_controller(directory: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """(controller in eval mode, its metadata) from ``lam-fast train-controller --out DIR``."""
    meta, state = _load_pair(directory, "controller")
    controller = build_controller(meta)
    controller.load_state_dict(state)
    return controller.to(device).eval(), meta


def load_action_model(directory: str | Path, device="cpu"):
    """(ActionConditionedWorldModel, frozen encoder, meta) from ``lam-fast train-action-model --out DIR``."""
    meta, state = _load_pair(directory, "action_model")
    encoder = build_encoder(meta["encoder"], meta["image_size"], **meta["encoder_options"]).to(device)
    cfg = ModelConfig(reg="deterministic", preset=meta["preset"], residual=meta["residual"])
    model = ActionConditionedWorldModel(cfg, state_dim=encoder.dim, grid=encoder.grid, action_dim=meta["action_dim"])
    model.load_state_dict(state)
    return model.to(device).eval(), encoder, meta

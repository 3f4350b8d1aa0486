"""Training: config, optimiser split and schedule, engines, checkpoints and the loop.

Importable without DeepSpeed; the DeepSpeed engine imports it on construction only.
"""

from lam_fast.training.config import ConfigError, TrainConfig, make_config
from lam_fast.training.loop import NonFiniteLossError, Trainer, TrainResult, train

__all__ = ["ConfigError", "NonFiniteLossError", "TrainConfig", "TrainResult", "Trainer", "make_config", "train"]

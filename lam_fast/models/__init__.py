"""Models of PAPER.md: frozen encoders, predictor, inverse dynamics, regularisers, the joint model."""

from lam_fast.models.config import (
    IDM_PRESETS,
    PREDICTOR_PRESETS,
    REGULARIZERS,
    DiscreteConfig,
    ModelConfig,
    NoisyConfig,
    SparseConfig,
    TransformerConfig,
)
from lam_fast.models.action_model import ActionConditionedWorldModel
from lam_fast.models.controller import CrossAttentionController, MLPController
from lam_fast.models.idm import InverseDynamicsModel
from lam_fast.models.predictor import Predictor
from lam_fast.models.regularizers import build_regularizer
from lam_fast.models.world_model import LatentActionWorldModel

__all__ = [
    "ActionConditionedWorldModel",
    "CrossAttentionController",
    "IDM_PRESETS",
    "PREDICTOR_PRESETS",
    "REGULARIZERS",
    "DiscreteConfig",
    "InverseDynamicsModel",
    "LatentActionWorldModel",
    "MLPController",
    "ModelConfig",
    "NoisyConfig",
    "Predictor",
    "SparseConfig",
    "TransformerConfig",
    "build_regularizer",
]

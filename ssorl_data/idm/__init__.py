"""The inverse dynamics model: network, training, checkpoints and evaluation.

from ssorl_data.idm import IdmTrainConfig, train_idm, load_idm, evaluate_idm
"""

from __future__ import annotations

from ssorl_data.idm.checkpoint import Idm, IdmSpec, checkpoint_hash, load_idm, save_idm
from ssorl_data.idm.evaluate import evaluate_idm
from ssorl_data.idm.training import IdmTrainConfig, TrainResult, train_idm

__all__ = [
    "Idm",
    "IdmSpec",
    "IdmTrainConfig",
    "TrainResult",
    "checkpoint_hash",
    "evaluate_idm",
    "load_idm",
    "save_idm",
    "train_idm",
]

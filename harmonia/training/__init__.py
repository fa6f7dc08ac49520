"""Training with the neural harmonizer: the loss (pyramid, weight term) and the training loop."""

from harmonia.training.loss import (
    HarmonizerLoss,
    disable_fused_attention,
    freeze_batchnorm,
    harmonizer_loss,
    standardize_cut,
)
from harmonia.training.pyramid import binomial_kernel, pyramid, same_padding
from harmonia.training.weight_decay import weight_params, weight_term
from harmonia.training.augment import PairedAugment
from harmonia.training.trainer import PRESETS, TrainConfig, TrainResult, train

__all__ = [
    "PRESETS",
    "PairedAugment",
    "TrainConfig",
    "TrainResult",
    "train",
    "HarmonizerLoss",
    "binomial_kernel",
    "disable_fused_attention",
    "freeze_batchnorm",
    "harmonizer_loss",
    "pyramid",
    "same_padding",
    "standardize_cut",
    "weight_params",
    "weight_term",
]

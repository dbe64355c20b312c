"""normjax: normalization and regularization for JAX, as pure functions and Flax modules."""

from normjax.batch_norm import (
    BatchNormState,
    batch_norm,
    batch_norm_init,
    decay_from_momentum,
    update_running_stats,
)
from normjax.dropout import dropout
from normjax.group_norm import group_norm
from normjax.instance_norm import instance_norm
from normjax.layer_norm import layer_norm
from normjax.penalties import default_penalty_mask, elastic_net_penalty, l1_penalty, l2_penalty
from normjax.rms_norm import rms_norm
from normjax.stats import Moments, moments, standardize
from normjax.weight_norm import weight_norm, weight_norm_init

__version__ = "0.1.0"

__all__ = [
    "BatchNormState",
    "Moments",
    "batch_norm",
    "batch_norm_init",
    "decay_from_momentum",
    "default_penalty_mask",
    "dropout",
    "elastic_net_penalty",
    "group_norm",
    "instance_norm",
    "l1_penalty",
    "l2_penalty",
    "layer_norm",
    "moments",
    "rms_norm",
    "standardize",
    "update_running_stats",
    "weight_norm",
    "weight_norm_init",
]

"""normjax: normalization and regularization for JAX, as pure functions and Flax modules.

The core techniques and the research variants are re-exported here; the Flax modules live in
``normjax.linen`` and ``normjax.nnx``. The gradient-accumulation helpers (``accumulate``,
``commit``) are in ``normjax.accumulation`` (the module
``normjax.norms.batch_norm_accumulation``) and ``normjax.research``.

Layout: ``stats`` (the statistics core), ``norms/`` (one module per normalization),
``weights/`` (weight reparametrizations), ``regularizers/`` (dropout variants, penalties),
``linen/`` and ``nnx/`` (the Flax layers), ``_backend/`` (derivatives and CPU kernels).
"""

from normjax import research
from normjax._backend import (
    native_kernels_enabled,
    native_status,
    set_fused_backward,
    set_native_kernels,
    use_fused_backward,
    use_native_kernels,
)
from normjax.norms import batch_norm_accumulation as accumulation
from normjax.norms.batch_norm import batch_norm
from normjax.norms.group_norm import group_norm
from normjax.norms.instance_norm import instance_norm
from normjax.norms.layer_norm import layer_norm
from normjax.norms.rms_norm import rms_norm
from normjax.regularizers.dropout import dropout
from normjax.regularizers.penalties import (
    default_penalty_mask,
    elastic_net_penalty,
    l1_penalty,
    l2_penalty,
)
from normjax.research import (
    SELU_ALPHA_PRIME,
    SWITCHABLE_ORDER,
    MomentsAccumulator,
    SpectralNormState,
    WhiteningState,
    accumulate_moments,
    accumulated_moments,
    activation_gamma,
    alpha_dropout,
    batch_norm_accumulate,
    batch_renorm,
    decorrelated_batch_norm,
    evonorm_b0,
    evonorm_s0,
    filter_response_norm,
    fold_batch_norm,
    frn_tlu,
    gaussian_dropout,
    ghost_batch_norm,
    moments_accumulator_init,
    pool_moments,
    precise_batch_norm,
    precise_flax_batch_stats,
    precise_moments,
    renorm_clipping_schedule,
    scaled_weight_standardization,
    spatial_dropout,
    spectral_norm,
    spectral_norm_init,
    switchable_norm,
    tlu,
    weight_standardization,
    whitening_init,
    whitening_matrix,
)
from normjax.running import (
    BatchNormState,
    batch_norm_init,
    decay_from_momentum,
    update_running_stats,
)
from normjax.stats import Moments, moments, standardize
from normjax.weights.weight_norm import weight_norm, weight_norm_init

__version__ = "0.1.0"

__all__ = [
    "BatchNormState",
    "accumulation",
    "Moments",
    "MomentsAccumulator",
    "SELU_ALPHA_PRIME",
    "SWITCHABLE_ORDER",
    "SpectralNormState",
    "WhiteningState",
    "accumulate_moments",
    "accumulated_moments",
    "activation_gamma",
    "alpha_dropout",
    "batch_norm",
    "batch_norm_accumulate",
    "batch_norm_init",
    "batch_renorm",
    "decay_from_momentum",
    "decorrelated_batch_norm",
    "default_penalty_mask",
    "dropout",
    "elastic_net_penalty",
    "evonorm_b0",
    "evonorm_s0",
    "filter_response_norm",
    "fold_batch_norm",
    "frn_tlu",
    "gaussian_dropout",
    "ghost_batch_norm",
    "group_norm",
    "instance_norm",
    "l1_penalty",
    "l2_penalty",
    "layer_norm",
    "moments",
    "moments_accumulator_init",
    "native_kernels_enabled",
    "native_status",
    "pool_moments",
    "precise_batch_norm",
    "precise_flax_batch_stats",
    "precise_moments",
    "renorm_clipping_schedule",
    "research",
    "rms_norm",
    "scaled_weight_standardization",
    "set_fused_backward",
    "set_native_kernels",
    "spatial_dropout",
    "spectral_norm",
    "spectral_norm_init",
    "standardize",
    "switchable_norm",
    "tlu",
    "update_running_stats",
    "use_fused_backward",
    "use_native_kernels",
    "weight_norm",
    "weight_norm_init",
    "weight_standardization",
    "whitening_init",
    "whitening_matrix",
]

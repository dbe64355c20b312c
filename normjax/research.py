"""Research variants of normalization and regularization, as pure functions.

Ghost BatchNorm, Batch Renormalization, Precise BN, BatchNorm across gradient accumulation,
Weight Standardization, Filter Response Normalization, EvoNorm, Switchable Normalization,
Decorrelated BatchNorm (whitening), Spectral Normalization, BatchNorm folding and dropout
variants. Each lives in its own module (``normjax.<name>``) with the formula, conventions and
paper in its docstring; this module gathers their public API.
"""

from normjax.norms.batch_norm_accumulation import (
    MomentsAccumulator,
    accumulate,
    accumulate_moments,
    accumulated_moments,
    batch_norm_accumulate,
    commit,
    moments_accumulator_init,
    pool_moments,
)
from normjax.norms.batch_renorm import batch_renorm, renorm_clipping_schedule
from normjax.norms.decorrelated_batch_norm import (
    WhiteningState,
    decorrelated_batch_norm,
    whitening_init,
    whitening_matrix,
)
from normjax.norms.evonorm import evonorm_b0, evonorm_s0
from normjax.norms.filter_response_norm import filter_response_norm, frn_tlu, tlu
from normjax.norms.ghost_batch_norm import ghost_batch_norm
from normjax.norms.precise_batch_norm import (
    precise_batch_norm,
    precise_flax_batch_stats,
    precise_moments,
)
from normjax.norms.switchable_norm import SWITCHABLE_ORDER, switchable_norm
from normjax.regularizers.dropout_variants import (
    SELU_ALPHA_PRIME,
    alpha_dropout,
    gaussian_dropout,
    spatial_dropout,
)
from normjax.weights.folding import fold_batch_norm
from normjax.weights.spectral_norm import SpectralNormState, spectral_norm, spectral_norm_init
from normjax.weights.weight_standardization import (
    activation_gamma,
    scaled_weight_standardization,
    weight_standardization,
)

__all__ = [
    "SELU_ALPHA_PRIME",
    "SWITCHABLE_ORDER",
    "MomentsAccumulator",
    "SpectralNormState",
    "WhiteningState",
    "accumulate",
    "accumulate_moments",
    "accumulated_moments",
    "activation_gamma",
    "alpha_dropout",
    "batch_norm_accumulate",
    "batch_renorm",
    "commit",
    "decorrelated_batch_norm",
    "evonorm_b0",
    "evonorm_s0",
    "filter_response_norm",
    "fold_batch_norm",
    "frn_tlu",
    "gaussian_dropout",
    "ghost_batch_norm",
    "moments_accumulator_init",
    "pool_moments",
    "precise_batch_norm",
    "precise_flax_batch_stats",
    "precise_moments",
    "renorm_clipping_schedule",
    "scaled_weight_standardization",
    "spatial_dropout",
    "spectral_norm",
    "spectral_norm_init",
    "switchable_norm",
    "tlu",
    "weight_standardization",
    "whitening_init",
    "whitening_matrix",
]

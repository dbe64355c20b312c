"""normjax: normalization and regularization for JAX, as pure functions and Flax modules.

The core techniques and the research variants are re-exported here; the Flax modules live in
``normjax.linen`` and ``normjax.nnx``. The gradient-accumulation helpers (``accumulate``,
``commit``) are in ``normjax.accumulation`` (the module
``normjax.norms.batch_norm_accumulation``). ``normjax.research``, which gathered the research
variants before they were all exported here, is a deprecated alias.

Layout: ``stats`` (the statistics core), ``norms/`` (one module per normalization),
``weights/`` (weight reparametrizations), ``regularizers/`` (dropout variants, penalties),
``linen/`` and ``nnx/`` (the Flax layers), ``_backend/`` (derivatives and CPU kernels).
"""

from normjax._backend import (
    native_kernels_enabled,
    native_status,
    set_fused_backward,
    set_native_kernels,
    use_fused_backward,
    use_native_kernels,
)
from normjax._numerics import Moments
from normjax.norms import batch_norm_accumulation as accumulation
from normjax.norms.batch_norm import batch_norm
from normjax.norms.batch_norm_accumulation import (
    MomentsAccumulator,
    accumulate_moments,
    accumulated_moments,
    batch_norm_accumulate,
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
from normjax.norms.group_norm import group_norm
from normjax.norms.instance_norm import instance_norm
from normjax.norms.layer_norm import layer_norm
from normjax.norms.precise_batch_norm import (
    precise_batch_norm,
    precise_flax_batch_stats,
    precise_moments,
)
from normjax.norms.rms_norm import rms_norm
from normjax.norms.switchable_norm import SWITCHABLE_ORDER, switchable_norm
from normjax.regularizers.dropout import dropout
from normjax.regularizers.dropout_variants import (
    SELU_ALPHA_PRIME,
    alpha_dropout,
    gaussian_dropout,
    spatial_dropout,
)
from normjax.regularizers.penalties import (
    default_penalty_mask,
    elastic_net_penalty,
    l1_penalty,
    l2_penalty,
)
from normjax.running import (
    BatchNormState,
    batch_norm_init,
    decay_from_momentum,
    update_running_stats,
)
from normjax.stats import moments, standardize
from normjax.weights.folding import fold_batch_norm
from normjax.weights.spectral_norm import SpectralNormState, spectral_norm, spectral_norm_init
from normjax.weights.weight_norm import weight_norm, weight_norm_init
from normjax.weights.weight_standardization import (
    activation_gamma,
    scaled_weight_standardization,
    weight_standardization,
)

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


def __getattr__(name: str) -> object:
    """``normjax.research``: the deprecated alias, imported (with its warning) on first use."""
    if name == "research":
        import importlib

        return importlib.import_module("normjax.research")
    raise AttributeError(f"module 'normjax' has no attribute {name!r}")

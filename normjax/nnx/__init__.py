"""Flax NNX layers over normjax's pure functions: a drop-in for flax.nnx's normalization layers.

``BatchNorm``, ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm``, ``WeightNorm`` and
``Dropout`` take flax.nnx's constructor signatures (``nnx.BatchNorm(num_features, *, ...,
rngs)``) with flax's meanings and defaults, keep flax's state (``nnx.Param`` ``scale`` /
``bias``; ``nnx.BatchStat`` ``mean`` / ``var``) and honour ``model.train()`` /
``model.eval()`` / ``nnx.view`` through the ``use_running_average`` and ``deterministic``
attributes, as flax does. Each ``__call__`` hands the arrays to the pure function
(:func:`normjax.batch_norm`, :func:`normjax.layer_norm`, ...) and stores the new state.

Every other name is flax.nnx's own (``normjax.nnx.Linear`` *is* ``flax.nnx.Linear``), so
switching a model is one line:

>>> from normjax import nnx  # was: from flax import nnx
>>> import flax.nnx
>>> nnx.Linear is flax.nnx.Linear, nnx.BatchNorm is flax.nnx.BatchNorm
(True, False)

The differences from flax are listed under "Switching from Flax" in the README.
"""

from __future__ import annotations

from typing import Any

from flax import nnx as _flax_nnx

from normjax.nnx.batch_norm import BatchNorm
from normjax.nnx.batch_norm_variants import BatchRenorm, DecorrelatedBatchNorm, GhostBatchNorm
from normjax.nnx.dropout import AlphaDropout, Dropout, GaussianDropout, SpatialDropout
from normjax.nnx.norm_variants import EvoNormB0, EvoNormS0, FilterResponseNorm, SwitchableNorm
from normjax.nnx.norms import GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normjax.nnx.weights import SpectralNorm, WeightNorm, WeightStandardization

__all__ = [
    "AlphaDropout",
    "BatchNorm",
    "BatchRenorm",
    "DecorrelatedBatchNorm",
    "Dropout",
    "EvoNormB0",
    "EvoNormS0",
    "FilterResponseNorm",
    "GaussianDropout",
    "GhostBatchNorm",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "RMSNorm",
    "SpatialDropout",
    "SpectralNorm",
    "SwitchableNorm",
    "WeightNorm",
    "WeightStandardization",
]


def __getattr__(name: str) -> Any:
    """Falls back to ``flax.nnx`` for every name normjax does not replace."""
    try:
        return getattr(_flax_nnx, name)
    except AttributeError:
        raise AttributeError(
            f"module 'normjax.nnx' has no attribute {name!r} (neither has flax.nnx)"
        ) from None


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(dir(_flax_nnx)))

"""Flax linen layers over normjax's pure functions: a drop-in for flax's normalization layers.

``BatchNorm``, ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm``, ``WeightNorm`` and
``Dropout`` take flax.linen's constructor and call arguments with flax's meanings and
defaults, and keep flax's variable names and collections (``params/scale``,
``params/bias``, ``batch_stats/mean``, ``batch_stats/var``), so checkpoints written with flax
load unchanged. Each ``__call__`` creates the variables, calls the pure function
(:func:`normjax.batch_norm`, :func:`normjax.layer_norm`, ...) and stores the new state.

Every other name is flax.linen's own: ``normjax.linen.Dense`` *is* ``flax.linen.Dense``. So
switching a model is one line:

>>> from normjax import linen as nn  # was: from flax import linen as nn
>>> import flax.linen
>>> nn.Dense is flax.linen.Dense, nn.BatchNorm is flax.linen.BatchNorm
(True, False)

What differs from flax (stable variance by default, ``batch_stats/count``, errors instead of
silent zeros, ...) is listed under "Switching from Flax" in the README.
"""

from __future__ import annotations

from typing import Any

from flax import linen as _flax_linen

from normjax.linen.batch_norm import BatchNorm
from normjax.linen.batch_norm_variants import BatchRenorm, DecorrelatedBatchNorm, GhostBatchNorm
from normjax.linen.dropout import AlphaDropout, Dropout, GaussianDropout, SpatialDropout
from normjax.linen.norm_variants import EvoNormB0, EvoNormS0, FilterResponseNorm, SwitchableNorm
from normjax.linen.norms import GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normjax.linen.weights import SpectralNorm, WeightNorm, WeightStandardization

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
    """Falls back to ``flax.linen`` for every name normjax does not replace."""
    try:
        return getattr(_flax_linen, name)
    except AttributeError:
        raise AttributeError(
            f"module 'normjax.linen' has no attribute {name!r} (neither has flax.linen)"
        ) from None


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(dir(_flax_linen)))

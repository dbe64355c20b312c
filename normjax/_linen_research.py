"""``normjax.linen`` layers for the research variants (re-exported by :mod:`normjax.linen`).

Thin wrappers over the pure functions of :mod:`normjax.research`, with flax.linen's
conventions (``params`` / ``batch_stats`` collections, ``use_running_average``,
``deterministic`` and the ``"dropout"`` rng stream):

* BatchNorm variants (:mod:`normjax._linen_research_bn`): ``GhostBatchNorm``, ``BatchRenorm``,
  ``DecorrelatedBatchNorm``.
* Per-channel normalizations (:mod:`normjax._linen_research_norms`): ``FilterResponseNorm``,
  ``EvoNormB0``, ``EvoNormS0``, ``SwitchableNorm``.
* Layer wrappers (:mod:`normjax._linen_research_wrappers`): ``SpectralNorm``,
  ``WeightStandardization``.
* Dropout variants (:mod:`normjax._linen_research_dropout`): ``SpatialDropout``,
  ``AlphaDropout``, ``GaussianDropout``.
"""

from normjax._linen_research_bn import BatchRenorm, DecorrelatedBatchNorm, GhostBatchNorm
from normjax._linen_research_dropout import AlphaDropout, GaussianDropout, SpatialDropout
from normjax._linen_research_norms import EvoNormB0, EvoNormS0, FilterResponseNorm, SwitchableNorm
from normjax._linen_research_wrappers import SpectralNorm, WeightStandardization

__all__ = [
    "AlphaDropout",
    "BatchRenorm",
    "DecorrelatedBatchNorm",
    "EvoNormB0",
    "EvoNormS0",
    "FilterResponseNorm",
    "GaussianDropout",
    "GhostBatchNorm",
    "SpatialDropout",
    "SpectralNorm",
    "SwitchableNorm",
    "WeightStandardization",
]

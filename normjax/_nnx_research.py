"""``normjax.nnx`` layers for the research variants (re-exported by :mod:`normjax.nnx`).

Thin wrappers over the pure functions of :mod:`normjax.research`, with flax.nnx's conventions
(``nnx.Param``, ``nnx.BatchStat``, ``nnx.Rngs``, ``use_running_average`` / ``deterministic``
set by ``model.train()`` / ``model.eval()`` / ``nnx.view``):

* BatchNorm variants (:mod:`normjax._nnx_research_bn`): ``GhostBatchNorm``, ``BatchRenorm``,
  ``DecorrelatedBatchNorm``.
* Per-channel normalizations (:mod:`normjax._nnx_research_norms`): ``FilterResponseNorm``,
  ``EvoNormB0``, ``EvoNormS0``, ``SwitchableNorm``.
* Layer wrappers (:mod:`normjax._nnx_research_wrappers`): ``SpectralNorm``,
  ``WeightStandardization``.
* Dropout variants (:mod:`normjax._nnx_research_dropout`): ``SpatialDropout``,
  ``AlphaDropout``, ``GaussianDropout``.
"""

from normjax._nnx_research_bn import BatchRenorm, DecorrelatedBatchNorm, GhostBatchNorm
from normjax._nnx_research_dropout import AlphaDropout, GaussianDropout, SpatialDropout
from normjax._nnx_research_norms import EvoNormB0, EvoNormS0, FilterResponseNorm, SwitchableNorm
from normjax._nnx_research_wrappers import SpectralNorm, WeightStandardization

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

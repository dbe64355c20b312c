"""Deprecated: every research variant is exported by ``normjax`` itself.

This module used to gather the research variants' public API. It still re-exports every public
name of their modules (``normjax.norms.ghost_batch_norm``, ...), and warns on import: use
``normjax.<name>``, and ``normjax.accumulation.accumulate`` / ``.commit`` for the two
gradient-accumulation helpers that the top-level namespace leaves in their module.
"""

import importlib
import warnings

MODULES = ("norms.batch_norm_accumulation", "norms.batch_renorm", "norms.decorrelated_batch_norm",
           "norms.evonorm", "norms.filter_response_norm", "norms.ghost_batch_norm",
           "norms.precise_batch_norm", "norms.switchable_norm", "regularizers.dropout_variants",
           "weights.folding", "weights.spectral_norm", "weights.weight_standardization")

warnings.warn("normjax.research is deprecated: use normjax.<name> (accumulate and commit: "
              "normjax.accumulation.<name>)", DeprecationWarning, stacklevel=2)

__all__: list[str] = []
for _name in MODULES:
    _module = importlib.import_module(f"normjax.{_name}")
    globals().update({n: getattr(_module, n) for n in _module.__all__})
    __all__ += _module.__all__

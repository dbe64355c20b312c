"""``normjax.linen.BatchNorm``: flax.linen's BatchNorm over :func:`normjax.batch_norm`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer
from jax.nn import initializers

from normjax._checks import canonicalize_axes, complement_axes, feature_shape
from normjax._flax_common import check_float32_reductions, dtype_like_flax
from normjax.linen._base import axis_name_of, linen_scale_bias, running_state, store
from normjax.norms.batch_norm import batch_norm
from normjax.running import batch_norm_init

__all__ = ["BatchNorm"]



class BatchNorm(nn.Module):
    """Batch Normalization (Ioffe & Szegedy, 2015, arXiv:1502.03167), a drop-in for flax's.

    ``y = (x - mu) / sqrt(var + epsilon) * scale + bias`` with the batch statistics over every
    axis but ``axis`` in training (``use_running_average=False``) and the running statistics
    in evaluation. The running statistics follow ``mean <- momentum * mean + (1 - momentum)
    * mu_B`` (flax's ``momentum`` is normjax's ``decay``, the weight on the old value).

    Variables are flax's: ``params/scale``, ``params/bias``, ``batch_stats/mean``,
    ``batch_stats/var`` (the same tree, shapes and dtypes). Only ``momentum=None`` and
    ``debias=True``, which need it, add ``batch_stats/count`` (int32 per feature, the updates
    that saw data); a missing count is read as 0 and is only created where the
    ``batch_stats`` collection is mutable. As in flax, the running statistics are not
    updated while the module is initialized.

    Attributes are flax's, with the same defaults except ``use_fast_variance`` (False: the
    stable guarded variance, exact when ``|mean| >> std``; flax defaults to the one-pass form).
    normjax's extras:

    * ``momentum=None``: the cumulative average over all batches (PyTorch's
      ``momentum=None``), driven by ``count``.
    * ``debias``: keep the zero-debiased EMA (Kingma & Ba, 2015).
    * ``running_var``: store the ``"biased"`` (flax) or ``"unbiased"`` (PyTorch) batch variance.

    With ``axis_name`` the statistics are the pooled ones, weighted by the true element
    counts (equal to flax's mean of per-device means when the counts are equal). Under
    ``jax.vmap`` / ``nn.vmap`` without ``axis_name``, a per-example input raises instead of
    silently normalizing every value to zero.
    """

    use_running_average: bool | None = None
    axis: int | Sequence[int] = -1
    momentum: float | None = 0.99
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = initializers.zeros
    scale_init: Initializer = initializers.ones
    axis_name: Any = None
    axis_index_groups: Any = None
    use_fast_variance: bool = False
    force_float32_reductions: bool = True
    debias: bool = False
    running_var: Literal["biased", "unbiased"] = "biased"

    @nn.compact
    def __call__(
        self,
        x: jax.typing.ArrayLike,
        use_running_average: bool | None = None,
        *,
        mask: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Normalizes ``x``; in training (and not during init) updates ``batch_stats``.

        Args:
          x: the input.
          use_running_average: evaluation mode (running statistics, no update); give it
            here or to the constructor, not both (flax's ``merge_param`` rule).
          mask: boolean, broadcastable to ``x``: only ``True`` positions enter the batch
            statistics.
        """
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        check_float32_reductions(self.force_float32_reductions, "BatchNorm")
        x = jnp.asarray(x)
        features = canonicalize_axes(self.axis, x.ndim, name="axis")
        reduction_axes = complement_axes(features, x.ndim)
        # only momentum=None and debias read the count: otherwise flax's variable tree
        counted = self.momentum is None or self.debias
        state, variables = running_state(
            self, batch_norm_init(feature_shape(x.shape, features)),
            optional=("count",) if counted else (), skip=() if counted else ("count",))
        scale, bias = linen_scale_bias(
            self, feature_shape(x.shape, features), use_scale=self.use_scale,
            use_bias=self.use_bias, scale_init=self.scale_init, bias_init=self.bias_init,
            param_dtype=self.param_dtype,
        )
        train = not use_running_average and not self._init_without_batch(x, reduction_axes)
        y, new = batch_norm(
            x, state,
            scale=scale, bias=bias, reduction_axes=reduction_axes, train=train,
            decay=self.momentum, epsilon=self.epsilon, mask=mask,
            axis_name=axis_name_of(self),
            axis_index_groups=self.axis_index_groups, debias=self.debias,
            running_var=self.running_var, fast_variance=self.use_fast_variance,
            dtype=dtype_like_flax(self.dtype, x, scale, bias),
        )
        store(self, variables, new, train)
        return y

    def _init_without_batch(self, x: jax.Array, reduction_axes: tuple[int, ...]) -> bool:
        """True while initializing a per-example layer whose batch lives on ``axis_name``.

        flax drops ``axis_name`` during init (the named axis need not exist then). A
        per-example input has no local batch, so the init output uses the running
        statistics instead (nothing is stored during init either way).
        """
        local = math.prod(x.shape[a] for a in reduction_axes)
        return self.is_initializing() and self.axis_name is not None and local <= 1


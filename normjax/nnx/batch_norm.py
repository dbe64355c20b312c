"""``normjax.nnx.BatchNorm``: flax.nnx's BatchNorm over :func:`normjax.batch_norm`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer

from normjax._checks import canonicalize_axes, complement_axes
from normjax._flax_common import DEFAULT_PROMOTE_DTYPE, promote_like_flax
from normjax.nnx._base import ONES, ZEROS, RunningStatsNorm, value_of
from normjax.norms.batch_norm import batch_norm
from normjax.running import batch_norm_init

__all__ = ["BatchNorm"]



class BatchNorm(RunningStatsNorm):
    """Batch Normalization (Ioffe & Szegedy, 2015, arXiv:1502.03167), a drop-in for flax.nnx's.

    ``y = (x - mu) / sqrt(var + epsilon) * scale + bias`` with the batch statistics over every
    axis but ``axis`` in training and the running statistics in evaluation
    (``use_running_average``, set by ``model.train()`` / ``model.eval()`` / ``nnx.view``).
    Running statistics: ``mean <- momentum * mean + (1 - momentum) * mu_B`` (flax's
    ``momentum`` is normjax's ``decay``).

    State is flax's (``scale``, ``bias``: ``nnx.Param``; ``mean``, ``var``: ``nnx.BatchStat``);
    only ``momentum=None`` or ``debias=True`` add ``count`` (``nnx.BatchStat``, int32 per
    feature, the updates that saw data), which they need.

    Arguments are flax.nnx's with the same defaults except ``use_fast_variance=False`` (the
    stable guarded variance). normjax's extras: ``momentum=None`` (cumulative average),
    ``debias`` (zero-debiased EMA) and ``running_var`` (``"biased"`` or ``"unbiased"``).
    With ``axis_name`` the statistics are pooled across the named axis, weighted by the true
    element counts; a per-example input without ``axis_name`` raises.
    """

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool | None = False,
        axis: int = -1,
        momentum: float | None = 0.99,
        epsilon: float = 1e-5,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = False,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        debias: bool = False,
        running_var: Literal["biased", "unbiased"] = "biased",
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
        scale_metadata: Mapping[str, Any] = MappingProxyType({}),
    ) -> None:
        counted = momentum is None or debias  # only these read the count
        super().__init__(
            num_features, batch_norm_init(num_features),
            stored=("mean", "var", "count") if counted else ("mean", "var"),
            use_running_average=use_running_average, momentum=momentum, epsilon=epsilon,
            dtype=dtype, param_dtype=param_dtype, use_bias=use_bias, use_scale=use_scale,
            bias_init=bias_init, scale_init=scale_init, axis_name=axis_name,
            axis_index_groups=axis_index_groups, promote_dtype=promote_dtype, rngs=rngs,
            bias_metadata=bias_metadata, scale_metadata=scale_metadata,
        )
        self.axis = axis
        self.use_fast_variance = use_fast_variance
        self.debias = debias
        self.running_var = running_var

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        use_running_average: bool | None = None,
        *,
        mask: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Normalizes ``x``; in training updates ``mean``, ``var`` (and ``count``).

        ``use_running_average`` given here takes precedence over the attribute.
        """
        train = self._training(use_running_average)
        stored = self._state()
        # flax's promotion order: (x, mean, var, scale, bias)
        x, mean, var, scale, bias = promote_like_flax(
            self.promote_dtype,
            (x, stored.mean, stored.var, value_of(self.scale), value_of(self.bias)),
            self.dtype,
        )
        features = canonicalize_axes(self.axis, jnp.ndim(x), name="axis")
        y, new = batch_norm(
            x, stored if train else stored._replace(mean=mean, var=var), scale=scale,
            bias=bias, reduction_axes=complement_axes(features, jnp.ndim(x)), train=train,
            decay=self.momentum, epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups, debias=self.debias,
            running_var=self.running_var, fast_variance=self.use_fast_variance,
        )
        self._store(new, train)
        return y

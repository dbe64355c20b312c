"""``normjax.linen`` BatchNorm variants: Ghost BatchNorm, Batch Renormalization and
Decorrelated BatchNorm, plus the running-statistics helpers shared with EvoNorm-B0 and
Switchable Normalization (:mod:`normjax.linen.norm_variants`).

Each ``__call__`` creates the variables, calls the pure function
(:func:`normjax.ghost_batch_norm`, :func:`normjax.batch_renorm`,
:func:`normjax.decorrelated_batch_norm`, ...) and stores the new state. Conventions are those
of :class:`normjax.linen.BatchNorm` (and flax's): parameters in ``params``, one ``batch_stats``
variable per field of the pure function's state (``mean``, ``var``, ``count``; DBN: ``mean``,
``cov``, ``count``), ``use_running_average`` given to the constructor or the call (not both),
and ``momentum`` the weight on the old running value (normjax's ``decay``). While the module is
initialized nothing is stored, and a layer with ``axis_name`` initializes in evaluation mode
(the named axis does not exist during ``init``, and the local batch may be one example).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer
from jax.nn import initializers

from normjax._checks import canonicalize_axes, complement_axes, feature_shape, single_axis
from normjax._flax_common import dtype_like_flax
from normjax._typing import ArrayLike
from normjax.linen._base import (
    axis_name_of,
    linen_scale_bias,
    running_state,
    store,
    take_channel_axis,
    training,
)
from normjax.norms.batch_renorm import batch_renorm
from normjax.norms.decorrelated_batch_norm import decorrelated_batch_norm, whitening_init
from normjax.norms.ghost_batch_norm import ghost_batch_norm
from normjax.running import batch_norm_init

__all__ = [
    "BatchRenorm",
    "DecorrelatedBatchNorm",
    "GhostBatchNorm",
    "axis_name_of",
    "running_state",
    "store",
    "training",
]

# --------------------------------------------------------------------------- BatchNorm family


class GhostBatchNorm(nn.Module):
    """Ghost BatchNorm (Hoffer et al., 2017, arXiv:1705.08741): BatchNorm per virtual batch.

    In training the batch axis (``batch_axis``, default 0) is split into virtual batches of
    ``virtual_batch_size`` examples, each normalized with its own statistics
    ``y_g = (x_g - mean(x_g)) / sqrt(var(x_g) + epsilon) * scale + bias``; evaluation is plain
    BatchNorm with the running statistics. The running statistics are updated once per call
    from ``running_stats`` (``"full_batch"``: the pooled batch statistics; ``"virtual_average"``:
    Keras' average of the virtual-batch statistics). Attributes are
    :class:`normjax.linen.BatchNorm`'s (``axis``: the feature axes) plus ``virtual_batch_size``,
    ``batch_axis`` and ``running_stats``; see :func:`normjax.ghost_batch_norm`.
    """

    virtual_batch_size: int
    use_running_average: bool | None = None
    axis: int | Sequence[int] = -1
    batch_axis: int = 0
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
    running_stats: Literal["full_batch", "virtual_average"] = "full_batch"
    debias: bool = False
    running_var: Literal["biased", "unbiased"] = "biased"

    @nn.compact
    def __call__(
        self, x: ArrayLike, use_running_average: bool | None = None, *,
        mask: ArrayLike | None = None,
    ) -> jax.Array:
        """Normalizes ``x``; ``mask`` (broadcastable to ``x``) selects what enters the stats."""
        x = jnp.asarray(x)
        features = canonicalize_axes(self.axis, x.ndim, name="axis")
        shape = feature_shape(x.shape, features)
        state, variables = running_state(self, batch_norm_init(shape))
        scale, bias = linen_scale_bias(
            self, shape, use_scale=self.use_scale, use_bias=self.use_bias,
            scale_init=self.scale_init, bias_init=self.bias_init, param_dtype=self.param_dtype)
        train = training(self, use_running_average)
        y, new = ghost_batch_norm(
            x, state, scale=scale, bias=bias, virtual_batch_size=self.virtual_batch_size,
            reduction_axes=complement_axes(features, x.ndim), batch_axis=self.batch_axis,
            train=train, decay=self.momentum, epsilon=self.epsilon, mask=mask,
            axis_name=axis_name_of(self), axis_index_groups=self.axis_index_groups,
            running_stats=self.running_stats, debias=self.debias, running_var=self.running_var,
            dtype=dtype_like_flax(self.dtype, x, scale, bias))
        store(self, variables, new, train)
        return y


class BatchRenorm(nn.Module):
    """Batch Renormalization (Ioffe, 2017, arXiv:1702.03275).

    Training: ``y = ((x - mu_B) / sigma_B * r + d) * scale + bias`` with
    ``r = clip(sigma_B / sigma, 1/r_max, r_max)`` and ``d = clip((mu_B - mu) / sigma, -d_max,
    d_max)`` (constants for the gradient; ``mu``, ``sigma`` the running statistics);
    evaluation: ``(x - mu) / sigma * scale + bias``. ``r_max``/``d_max`` may also be given to
    the call, where they may be traced (e.g. :func:`normjax.renorm_clipping_schedule` of the
    step inside a jitted train step); the call's values win. Attributes are
    :class:`normjax.linen.BatchNorm`'s; see :func:`normjax.batch_renorm`.
    """

    use_running_average: bool | None = None
    axis: int | Sequence[int] = -1
    r_max: float = 3.0
    d_max: float = 5.0
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
    debias: bool = False
    running_var: Literal["biased", "unbiased"] = "biased"

    @nn.compact
    def __call__(
        self, x: ArrayLike, use_running_average: bool | None = None, *,
        mask: ArrayLike | None = None, r_max: ArrayLike | None = None,
        d_max: ArrayLike | None = None,
    ) -> jax.Array:
        """Normalizes ``x``; ``r_max``/``d_max`` here override the attributes."""
        x = jnp.asarray(x)
        features = canonicalize_axes(self.axis, x.ndim, name="axis")
        shape = feature_shape(x.shape, features)
        state, variables = running_state(self, batch_norm_init(shape))
        scale, bias = linen_scale_bias(
            self, shape, use_scale=self.use_scale, use_bias=self.use_bias,
            scale_init=self.scale_init, bias_init=self.bias_init, param_dtype=self.param_dtype)
        train = training(self, use_running_average)
        y, new = batch_renorm(
            x, state, scale=scale, bias=bias, reduction_axes=complement_axes(features, x.ndim),
            train=train, r_max=self.r_max if r_max is None else r_max,
            d_max=self.d_max if d_max is None else d_max, decay=self.momentum,
            epsilon=self.epsilon, mask=mask, axis_name=axis_name_of(self),
            axis_index_groups=self.axis_index_groups, debias=self.debias,
            running_var=self.running_var, dtype=dtype_like_flax(self.dtype, x, scale, bias))
        store(self, variables, new, train)
        return y


class DecorrelatedBatchNorm(nn.Module):
    """Decorrelated BatchNorm (Huang et al., 2018, arXiv:1804.08450): ZCA whitening per group.

    The features on ``feature_axes`` are split into groups of ``group_size`` (``None``: one
    group; the paper uses 16) and each group is whitened,
    ``y = (Sigma + epsilon I)^(-1/2) (x - mu) * scale + bias``, with the batch mean and
    covariance in training and their running averages in evaluation. Params ``scale``,
    ``bias``; ``batch_stats`` ``mean`` ``(C,)``, ``cov`` ``(C / group_size, group_size,
    group_size)``, ``count``. See :func:`normjax.decorrelated_batch_norm`.
    """

    use_running_average: bool | None = None
    feature_axes: int = -1
    group_size: int | None = None
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
    channel_axis: int | None = None  # the deprecated name of feature_axes

    def __post_init__(self) -> None:
        take_channel_axis(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: ArrayLike, use_running_average: bool | None = None) -> jax.Array:
        """Whitens ``x`` over every axis but ``feature_axes``."""
        x = jnp.asarray(x)
        c = single_axis(self.feature_axes, x.ndim, name="feature_axes")
        init = whitening_init(x.shape[c], group_size=self.group_size)
        state, variables = running_state(self, init)
        scale, bias = linen_scale_bias(
            self, (x.shape[c],), use_scale=self.use_scale, use_bias=self.use_bias,
            scale_init=self.scale_init, bias_init=self.bias_init, param_dtype=self.param_dtype)
        train = training(self, use_running_average)
        y, new = decorrelated_batch_norm(
            x, state, scale=scale, bias=bias, train=train, feature_axes=c,
            decay=self.momentum, epsilon=self.epsilon, axis_name=axis_name_of(self),
            axis_index_groups=self.axis_index_groups,
            dtype=dtype_like_flax(self.dtype, x, scale, bias))
        store(self, variables, new, train)
        return y

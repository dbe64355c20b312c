"""``normjax.nnx`` BatchNorm variants: Ghost BatchNorm, Batch Renormalization and Decorrelated
BatchNorm.

Conventions are those of :class:`normjax.nnx.BatchNorm` (and flax.nnx's): ``scale`` / ``bias``
are ``nnx.Param``; each field of the pure function's state (``mean``, ``var``, ``count``; DBN:
``mean``, ``cov``, ``count``) is an ``nnx.BatchStat``; ``use_running_average`` (set by
``model.train()`` / ``model.eval()`` / ``nnx.view``, overridden by the call argument) selects
evaluation; ``momentum`` is the weight on the old running value (normjax's ``decay``); and
``promote_dtype`` casts the input and params as flax does. Each ``__call__`` hands the arrays
to the pure function and stores the new state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer

from normjax._checks import canonicalize_axes, complement_axes, renamed_arguments
from normjax._flax_common import DEFAULT_PROMOTE_DTYPE
from normjax._typing import ArrayLike
from normjax.nnx._base import NO_METADATA, ONES, ZEROS, RunningStatsNorm
from normjax.norms.batch_renorm import batch_renorm
from normjax.norms.decorrelated_batch_norm import decorrelated_batch_norm, whitening_init
from normjax.norms.ghost_batch_norm import ghost_batch_norm
from normjax.running import batch_norm_init

__all__ = ["BatchRenorm", "DecorrelatedBatchNorm", "GhostBatchNorm"]



class GhostBatchNorm(RunningStatsNorm):
    """Ghost BatchNorm (Hoffer et al., 2017, arXiv:1705.08741): BatchNorm per virtual batch.

    In training the batch axis (``batch_axis``) is split into virtual batches of
    ``virtual_batch_size`` examples, each normalized with its own statistics
    ``y_g = (x_g - mean(x_g)) / sqrt(var(x_g) + epsilon) * scale + bias``; evaluation is plain
    BatchNorm with the running statistics, updated once per call from ``running_stats``
    (``"full_batch"`` or Keras' ``"virtual_average"``). Arguments are
    :class:`normjax.nnx.BatchNorm`'s (``axis``: the feature axis) plus ``virtual_batch_size``,
    ``batch_axis`` and ``running_stats``; see :func:`normjax.ghost_batch_norm`.
    """

    def __init__(
        self,
        num_features: int,
        *,
        virtual_batch_size: int,
        use_running_average: bool | None = False,
        axis: int = -1,
        batch_axis: int = 0,
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
        running_stats: Literal["full_batch", "virtual_average"] = "full_batch",
        debias: bool = False,
        running_var: Literal["biased", "unbiased"] = "biased",
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        super().__init__(
            num_features, batch_norm_init(num_features),
            use_running_average=use_running_average, momentum=momentum, epsilon=epsilon,
            dtype=dtype, param_dtype=param_dtype, use_bias=use_bias, use_scale=use_scale,
            bias_init=bias_init, scale_init=scale_init, axis_name=axis_name,
            axis_index_groups=axis_index_groups, promote_dtype=promote_dtype, rngs=rngs,
            bias_metadata=bias_metadata, scale_metadata=scale_metadata)
        self.virtual_batch_size = virtual_batch_size
        self.axis = axis
        self.batch_axis = batch_axis
        self.running_stats = running_stats
        self.debias = debias
        self.running_var = running_var

    def __call__(
        self, x: ArrayLike, use_running_average: bool | None = None, *,
        mask: ArrayLike | None = None,
    ) -> jax.Array:
        """Normalizes ``x``; ``mask`` (broadcastable to ``x``) selects what enters the stats."""
        train = self._training(use_running_average)
        x, scale, bias = self._promoted(x)
        features = canonicalize_axes(self.axis, jnp.ndim(x), name="axis")
        y, new = ghost_batch_norm(
            x, self._state(), scale=scale, bias=bias,
            virtual_batch_size=self.virtual_batch_size,
            reduction_axes=complement_axes(features, jnp.ndim(x)), batch_axis=self.batch_axis,
            train=train, decay=self.momentum, epsilon=self.epsilon, mask=mask,
            axis_name=self.axis_name, axis_index_groups=self.axis_index_groups,
            running_stats=self.running_stats, debias=self.debias, running_var=self.running_var)
        self._store(new, train)
        return y


class BatchRenorm(RunningStatsNorm):
    """Batch Renormalization (Ioffe, 2017, arXiv:1702.03275).

    Training: ``y = ((x - mu_B) / sigma_B * r + d) * scale + bias`` with
    ``r = clip(sigma_B / sigma, 1/r_max, r_max)`` and ``d = clip((mu_B - mu) / sigma, -d_max,
    d_max)`` (constants for the gradient; ``mu``, ``sigma`` the running statistics);
    evaluation: ``(x - mu) / sigma * scale + bias``. ``r_max``/``d_max`` given to the call win
    over the attributes and may be traced (e.g. :func:`normjax.renorm_clipping_schedule` of
    the step). Arguments are :class:`normjax.nnx.BatchNorm`'s; see
    :func:`normjax.batch_renorm`.
    """

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool | None = False,
        axis: int = -1,
        r_max: float = 3.0,
        d_max: float = 5.0,
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
        debias: bool = False,
        running_var: Literal["biased", "unbiased"] = "biased",
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        super().__init__(
            num_features, batch_norm_init(num_features),
            use_running_average=use_running_average, momentum=momentum, epsilon=epsilon,
            dtype=dtype, param_dtype=param_dtype, use_bias=use_bias, use_scale=use_scale,
            bias_init=bias_init, scale_init=scale_init, axis_name=axis_name,
            axis_index_groups=axis_index_groups, promote_dtype=promote_dtype, rngs=rngs,
            bias_metadata=bias_metadata, scale_metadata=scale_metadata)
        self.axis = axis
        self.r_max = r_max
        self.d_max = d_max
        self.debias = debias
        self.running_var = running_var

    def __call__(
        self, x: ArrayLike, use_running_average: bool | None = None, *,
        mask: ArrayLike | None = None, r_max: ArrayLike | None = None,
        d_max: ArrayLike | None = None,
    ) -> jax.Array:
        """Normalizes ``x``; ``r_max``/``d_max`` here override the attributes."""
        train = self._training(use_running_average)
        x, scale, bias = self._promoted(x)
        features = canonicalize_axes(self.axis, jnp.ndim(x), name="axis")
        y, new = batch_renorm(
            x, self._state(), scale=scale, bias=bias,
            reduction_axes=complement_axes(features, jnp.ndim(x)), train=train,
            r_max=self.r_max if r_max is None else r_max,
            d_max=self.d_max if d_max is None else d_max, decay=self.momentum,
            epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups, debias=self.debias,
            running_var=self.running_var)
        self._store(new, train)
        return y


class DecorrelatedBatchNorm(RunningStatsNorm):
    """Decorrelated BatchNorm (Huang et al., 2018, arXiv:1804.08450): ZCA whitening per group.

    The ``num_features`` features on ``feature_axes`` are split into groups of ``group_size``
    (``None``: one group; the paper uses 16) and each group is whitened,
    ``y = (Sigma + epsilon I)^(-1/2) (x - mu) * scale + bias``, with the batch mean and
    covariance in training and their running averages in evaluation. State: ``mean``
    ``(C,)``, ``cov`` ``(C / group_size, group_size, group_size)``, ``count``. See
    :func:`normjax.decorrelated_batch_norm`.
    """

    @renamed_arguments(channel_axis="feature_axes")
    def __init__(
        self,
        num_features: int,
        *,
        group_size: int | None = None,
        use_running_average: bool | None = False,
        feature_axes: int = -1,
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
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        super().__init__(
            num_features, whitening_init(num_features, group_size=group_size),
            use_running_average=use_running_average, momentum=momentum, epsilon=epsilon,
            dtype=dtype, param_dtype=param_dtype, use_bias=use_bias, use_scale=use_scale,
            bias_init=bias_init, scale_init=scale_init, axis_name=axis_name,
            axis_index_groups=axis_index_groups, promote_dtype=promote_dtype, rngs=rngs,
            bias_metadata=bias_metadata, scale_metadata=scale_metadata)
        self.group_size = group_size
        self.feature_axes = feature_axes

    def __call__(self, x: ArrayLike, use_running_average: bool | None = None) -> jax.Array:
        """Whitens ``x`` over every axis but ``feature_axes``."""
        train = self._training(use_running_average)
        x, scale, bias = self._promoted(x)
        y, new = decorrelated_batch_norm(
            x, self._state(), scale=scale, bias=bias, train=train,
            feature_axes=self.feature_axes, decay=self.momentum, epsilon=self.epsilon,
            axis_name=self.axis_name, axis_index_groups=self.axis_index_groups)
        self._store(new, train)
        return y

"""``normjax.nnx`` per-channel research normalizations: Filter Response Normalization (+TLU),
EvoNorm-B0, EvoNorm-S0 and Switchable Normalization.

These take normjax's ``feature_axes`` (default -1) and ``batch_axes`` (default 0; ``()`` under
a per-example ``vmap``). Params are ``nnx.Param`` (``scale``, ``bias`` and the technique's
own); the layers with running statistics (B0, Switchable) keep them as ``nnx.BatchStat`` with
the conventions of :class:`normjax.nnx.BatchNorm` (see :mod:`normjax.nnx.batch_norm_variants`). The
math is in :func:`normjax.frn_tlu`, :func:`normjax.evonorm_b0`, :func:`normjax.evonorm_s0`
and :func:`normjax.switchable_norm`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import initializers
from flax.typing import Dtype, Initializer

from normjax._checks import renamed_arguments
from normjax._flax_common import DEFAULT_PROMOTE_DTYPE, check_one_of_groups, promote_like_flax
from normjax._typing import ArrayLike, Axes
from normjax.nnx._base import NO_METADATA, ONES, ZEROS, RunningStatsNorm, nnx_scale_bias, value_of
from normjax.norms.evonorm import evonorm_b0, evonorm_s0
from normjax.norms.filter_response_norm import filter_response_norm, frn_tlu
from normjax.norms.switchable_norm import switchable_norm
from normjax.running import batch_norm_init

__all__ = ["EvoNormB0", "EvoNormS0", "FilterResponseNorm", "SwitchableNorm"]

EPS_INIT: Initializer = initializers.constant(1e-4)


def _param(init: Initializer, shape: tuple[int, ...], dtype: Dtype, rngs: nnx.Rngs) -> nnx.Param:
    return nnx.Param(init(rngs.params(), shape, dtype))


class FilterResponseNorm(nnx.Module):
    """Filter Response Normalization with the Thresholded Linear Unit (Singh & Krishnan, 2019,
    arXiv:1911.09737).

    ``y = scale * x / sqrt(mean(x^2 over the spatial axes) + epsilon) + bias``, then (with
    ``use_tlu``) ``z = max(y, tau)``; batch-independent, no mean subtracted. Params ``scale``,
    ``bias``, ``tau`` (per channel; init 1, 0, 0) and, with ``learned_epsilon=True``, a scalar
    ``eps`` (init ``eps_init``, 1e-4) used as ``epsilon + |eps|``.
    """

    @renamed_arguments(channel_axis="feature_axes")
    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        learned_epsilon: bool = False,
        use_tlu: bool = True,
        feature_axes: int = -1,
        batch_axes: Axes = 0,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        tau_init: Initializer = ZEROS,
        eps_init: Initializer = EPS_INIT,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        self.scale, self.bias = nnx_scale_bias(
            (num_features,), use_scale=use_scale, use_bias=use_bias, scale_init=scale_init,
            bias_init=bias_init, param_dtype=param_dtype, rngs=rngs,
            scale_metadata=scale_metadata, bias_metadata=bias_metadata)
        shape = (num_features,)
        self.tau = _param(tau_init, shape, param_dtype, rngs) if use_tlu else nnx.data(None)
        self.eps = _param(eps_init, (), param_dtype, rngs) if learned_epsilon else nnx.data(None)
        self.num_features = num_features
        self.epsilon = epsilon
        self.learned_epsilon = learned_epsilon
        self.use_tlu = use_tlu
        self.feature_axes = feature_axes
        self.batch_axes = batch_axes
        self.dtype = dtype
        self.promote_dtype = promote_dtype

    def __call__(self, x: ArrayLike) -> jax.Array:
        """Normalizes ``x`` (and applies the TLU when ``use_tlu``)."""
        x, scale, bias, tau = promote_like_flax(
            self.promote_dtype,
            (x, value_of(self.scale), value_of(self.bias), value_of(self.tau)), self.dtype)
        epsilon = self.epsilon
        if self.learned_epsilon:
            epsilon = epsilon + jnp.abs(self.eps[...])
        kwargs = dict(feature_axes=self.feature_axes, batch_axes=self.batch_axes,
                      epsilon=epsilon)
        if self.use_tlu:
            return frn_tlu(x, scale, bias, tau, **kwargs)
        return filter_response_norm(x, scale, bias, **kwargs)


class EvoNormS0(nnx.Module):
    """EvoNorm-S0 (Liu et al., 2020, arXiv:2004.02967): a batch-independent normalization-
    activation layer.

    ``y = x * sigmoid(v * x) / sqrt(s2_group(x) + epsilon) * scale + bias`` with ``s2_group``
    the GroupNorm variance over the spatial axes and the channels of each group. Give exactly
    one of ``num_groups`` (default 32) and ``group_size`` (with ``num_groups=None``). Params
    ``scale``, ``bias``, ``v`` (per channel).
    """

    @renamed_arguments(channel_axis="feature_axes")
    def __init__(
        self,
        num_features: int,
        num_groups: int | None = 32,
        group_size: int | None = None,
        *,
        epsilon: float = 1e-5,
        feature_axes: int = -1,
        batch_axes: Axes = 0,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        v_init: Initializer = ONES,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_one_of_groups(num_groups, group_size)
        self.scale, self.bias = nnx_scale_bias(
            (num_features,), use_scale=use_scale, use_bias=use_bias, scale_init=scale_init,
            bias_init=bias_init, param_dtype=param_dtype, rngs=rngs,
            scale_metadata=scale_metadata, bias_metadata=bias_metadata)
        self.v = _param(v_init, (num_features,), param_dtype, rngs)
        self.num_features = num_features
        self.num_groups = num_groups
        self.group_size = group_size
        self.epsilon = epsilon
        self.feature_axes = feature_axes
        self.batch_axes = batch_axes
        self.dtype = dtype
        self.promote_dtype = promote_dtype

    def __call__(self, x: ArrayLike) -> jax.Array:
        """Normalizes and activates ``x``."""
        x, scale, bias, v = promote_like_flax(
            self.promote_dtype,
            (x, value_of(self.scale), value_of(self.bias), self.v[...]), self.dtype)
        return evonorm_s0(x, scale, bias, v=v, num_groups=self.num_groups,
                          group_size=self.group_size, feature_axes=self.feature_axes,
                          batch_axes=self.batch_axes, epsilon=self.epsilon)


class EvoNormB0(RunningStatsNorm):
    """EvoNorm-B0 (Liu et al., 2020, arXiv:2004.02967): normalization and activation in one.

    ``y = x / max(sqrt(s2_batch + epsilon), v * x + sqrt(s2_instance + epsilon)) * scale +
    bias`` with the batch variance over the batch and spatial axes (its running average in
    evaluation) and the per-example variance over the spatial axes. Params ``scale``,
    ``bias``, ``v``; state ``mean``, ``var``, ``count`` (only the variance is used).
    """

    @renamed_arguments(channel_axis="feature_axes")
    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool | None = False,
        feature_axes: int = -1,
        batch_axes: Axes = 0,
        momentum: float | None = 0.99,
        epsilon: float = 1e-5,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        v_init: Initializer = ONES,
        axis_name: Any = None,
        axis_index_groups: Any = None,
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
        self.v = _param(v_init, (num_features,), param_dtype, rngs)
        self.feature_axes = feature_axes
        self.batch_axes = batch_axes
        self.running_var = running_var

    def __call__(self, x: ArrayLike, use_running_average: bool | None = None) -> jax.Array:
        """Normalizes and activates ``x`` (at least one spatial axis)."""
        train = self._training(use_running_average)
        x, scale, bias, v = self._promoted(x, self.v[...])
        y, new = evonorm_b0(
            x, self._state(), scale=scale, bias=bias, v=v, train=train,
            feature_axes=self.feature_axes, batch_axes=self.batch_axes, decay=self.momentum,
            epsilon=self.epsilon, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups, running_var=self.running_var)
        self._store(new, train)
        return y


class SwitchableNorm(RunningStatsNorm):
    """Switchable Normalization (Luo et al., 2018, arXiv:1806.10779).

    ``mu = sum_k softmax(mean_logits)_k mu_k`` and ``sigma^2 = sum_k softmax(var_logits)_k
    sigma^2_k`` over ``k = (instance, layer, batch)`` statistics, then
    ``y = (x - mu) / sqrt(sigma^2 + epsilon) * scale + bias``; the batch term uses its running
    statistics in evaluation. Params ``scale``, ``bias``, ``mean_logits``, ``var_logits``
    (``(3,)``, ordered IN, LN, BN; init ``logits_init``, zeros); state ``mean``, ``var``,
    ``count``.
    """

    @renamed_arguments(channel_axis="feature_axes")
    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool | None = False,
        feature_axes: int = -1,
        batch_axes: Axes = 0,
        momentum: float | None = 0.99,
        epsilon: float = 1e-5,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        logits_init: Initializer = ZEROS,
        axis_name: Any = None,
        axis_index_groups: Any = None,
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
        self.mean_logits = _param(logits_init, (3,), param_dtype, rngs)
        self.var_logits = _param(logits_init, (3,), param_dtype, rngs)
        self.feature_axes = feature_axes
        self.batch_axes = batch_axes
        self.running_var = running_var

    def __call__(self, x: ArrayLike, use_running_average: bool | None = None) -> jax.Array:
        """Normalizes ``x`` (at least one spatial axis)."""
        train = self._training(use_running_average)
        x, scale, bias = self._promoted(x)
        y, new = switchable_norm(
            x, self._state(), scale=scale, bias=bias, mean_logits=self.mean_logits[...],
            var_logits=self.var_logits[...], train=train, feature_axes=self.feature_axes,
            batch_axes=self.batch_axes, decay=self.momentum, epsilon=self.epsilon,
            axis_name=self.axis_name, axis_index_groups=self.axis_index_groups,
            running_var=self.running_var)
        self._store(new, train)
        return y

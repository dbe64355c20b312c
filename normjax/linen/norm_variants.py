"""``normjax.linen`` per-channel research normalizations: Filter Response Normalization (+TLU),
EvoNorm-B0, EvoNorm-S0 and Switchable Normalization.

These take normjax's ``feature_axes`` (default -1, channels last) and ``batch_axes`` (default
0: the axes indexing independent examples; ``()`` under a per-example ``vmap``) instead of
flax's ``axis``. Each ``__call__`` creates the params (``scale``, ``bias`` and the technique's
own), calls the pure function (:func:`normjax.filter_response_norm`, :func:`normjax.frn_tlu`,
:func:`normjax.evonorm_b0`, :func:`normjax.evonorm_s0`, :func:`normjax.switchable_norm`) and,
for the layers with running statistics (B0, Switchable), stores them in ``batch_stats`` with
the conventions of :class:`normjax.linen.BatchNorm` (see :mod:`normjax.linen.batch_norm_variants`).
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer
from jax.nn import initializers

from normjax._checks import single_axis
from normjax._flax_common import check_one_of_groups, dtype_like_flax
from normjax._typing import ArrayLike, Axes
from normjax.linen._base import (
    axis_name_of,
    linen_scale_bias,
    running_state,
    store,
    take_channel_axis,
    training,
)
from normjax.norms.evonorm import evonorm_b0, evonorm_s0
from normjax.norms.filter_response_norm import filter_response_norm, frn_tlu
from normjax.norms.switchable_norm import switchable_norm
from normjax.running import batch_norm_init

__all__ = [
    "EvoNormB0",
    "EvoNormS0",
    "FilterResponseNorm",
    "SwitchableNorm",
]





class FilterResponseNorm(nn.Module):
    """Filter Response Normalization with the Thresholded Linear Unit (Singh & Krishnan, 2019,
    arXiv:1911.09737).

    ``y = scale * x / sqrt(mean(x^2 over the spatial axes) + epsilon) + bias``, then (with
    ``use_tlu``) ``z = max(y, tau)``; no mean is subtracted and nothing depends on the batch.
    Params ``scale``, ``bias``, ``tau`` (per channel; init 1, 0, 0 as in the paper) and, with
    ``learned_epsilon=True`` (the paper's choice for inputs without spatial axes), a scalar
    ``eps`` (init ``eps_init``, 1e-4) used as ``epsilon + |eps|``. See
    :func:`normjax.frn_tlu`.
    """

    epsilon: float = 1e-6
    learned_epsilon: bool = False
    use_tlu: bool = True
    feature_axes: int = -1
    batch_axes: Axes = 0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = initializers.zeros
    scale_init: Initializer = initializers.ones
    tau_init: Initializer = initializers.zeros
    eps_init: Initializer = initializers.constant(1e-4)
    channel_axis: int | None = None  # the deprecated name of feature_axes

    def __post_init__(self) -> None:
        take_channel_axis(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: ArrayLike) -> jax.Array:
        """Normalizes ``x`` (and applies the TLU when ``use_tlu``)."""
        x = jnp.asarray(x)
        c = single_axis(self.feature_axes, x.ndim, name="feature_axes")
        scale, bias = linen_scale_bias(
            self, (x.shape[c],), use_scale=self.use_scale, use_bias=self.use_bias,
            scale_init=self.scale_init, bias_init=self.bias_init, param_dtype=self.param_dtype)
        tau = self.param("tau", self.tau_init, (x.shape[c],), self.param_dtype) if (
            self.use_tlu) else None
        epsilon = self.epsilon
        if self.learned_epsilon:
            epsilon = epsilon + jnp.abs(self.param("eps", self.eps_init, (), self.param_dtype))
        kwargs = dict(feature_axes=c, batch_axes=self.batch_axes, epsilon=epsilon,
                      dtype=dtype_like_flax(self.dtype, x, scale, bias, tau))
        if self.use_tlu:
            return frn_tlu(x, scale, bias, tau, **kwargs)
        return filter_response_norm(x, scale, bias, **kwargs)


class EvoNormS0(nn.Module):
    """EvoNorm-S0 (Liu et al., 2020, arXiv:2004.02967): a batch-independent normalization-
    activation layer.

    ``y = x * sigmoid(v * x) / sqrt(s2_group(x) + epsilon) * scale + bias`` with ``s2_group``
    the GroupNorm variance over the spatial axes and the channels of each group. Give exactly
    one of ``num_groups`` (default 32, as in the paper) and ``group_size`` (pass
    ``num_groups=None`` with it). Params ``scale``, ``bias``, ``v`` (per channel). See
    :func:`normjax.evonorm_s0`.
    """

    num_groups: int | None = 32
    group_size: int | None = None
    epsilon: float = 1e-5
    feature_axes: int = -1
    batch_axes: Axes = 0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = initializers.zeros
    scale_init: Initializer = initializers.ones
    v_init: Initializer = initializers.ones
    channel_axis: int | None = None  # the deprecated name of feature_axes

    def __post_init__(self) -> None:
        take_channel_axis(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: ArrayLike) -> jax.Array:
        """Normalizes and activates ``x``."""
        check_one_of_groups(self.num_groups, self.group_size)
        x = jnp.asarray(x)
        c = single_axis(self.feature_axes, x.ndim, name="feature_axes")
        scale, bias = linen_scale_bias(
            self, (x.shape[c],), use_scale=self.use_scale, use_bias=self.use_bias,
            scale_init=self.scale_init, bias_init=self.bias_init, param_dtype=self.param_dtype)
        v = self.param("v", self.v_init, (x.shape[c],), self.param_dtype)
        return evonorm_s0(
            x, scale, bias, v=v, num_groups=self.num_groups, group_size=self.group_size,
            feature_axes=c, batch_axes=self.batch_axes, epsilon=self.epsilon,
            dtype=dtype_like_flax(self.dtype, x, scale, bias, v))


class EvoNormB0(nn.Module):
    """EvoNorm-B0 (Liu et al., 2020, arXiv:2004.02967): normalization and activation in one.

    ``y = x / max(sqrt(s2_batch + epsilon), v * x + sqrt(s2_instance + epsilon)) * scale +
    bias`` with the batch variance over the batch and spatial axes (its running average in
    evaluation) and the per-example variance over the spatial axes. Params ``scale``,
    ``bias``, ``v`` (per channel); ``batch_stats`` ``mean``, ``var``, ``count`` (only the
    variance is used). See :func:`normjax.evonorm_b0`.
    """

    use_running_average: bool | None = None
    feature_axes: int = -1
    batch_axes: Axes = 0
    momentum: float | None = 0.99
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = initializers.zeros
    scale_init: Initializer = initializers.ones
    v_init: Initializer = initializers.ones
    axis_name: Any = None
    axis_index_groups: Any = None
    running_var: Literal["biased", "unbiased"] = "biased"
    channel_axis: int | None = None  # the deprecated name of feature_axes

    def __post_init__(self) -> None:
        take_channel_axis(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: ArrayLike, use_running_average: bool | None = None) -> jax.Array:
        """Normalizes and activates ``x`` (at least one spatial axis)."""
        x = jnp.asarray(x)
        c = single_axis(self.feature_axes, x.ndim, name="feature_axes")
        state, variables = running_state(self, batch_norm_init(x.shape[c]))
        scale, bias = linen_scale_bias(
            self, (x.shape[c],), use_scale=self.use_scale, use_bias=self.use_bias,
            scale_init=self.scale_init, bias_init=self.bias_init, param_dtype=self.param_dtype)
        v = self.param("v", self.v_init, (x.shape[c],), self.param_dtype)
        train = training(self, use_running_average)
        y, new = evonorm_b0(
            x, state, scale=scale, bias=bias, v=v, train=train, feature_axes=c,
            batch_axes=self.batch_axes, decay=self.momentum, epsilon=self.epsilon,
            axis_name=axis_name_of(self), axis_index_groups=self.axis_index_groups,
            running_var=self.running_var, dtype=dtype_like_flax(self.dtype, x, scale, bias, v))
        store(self, variables, new, train)
        return y


class SwitchableNorm(nn.Module):
    """Switchable Normalization (Luo et al., 2018, arXiv:1806.10779).

    ``mu = sum_k softmax(mean_logits)_k mu_k`` and ``sigma^2 = sum_k softmax(var_logits)_k
    sigma^2_k`` over ``k = (instance, layer, batch)`` statistics, then
    ``y = (x - mu) / sqrt(sigma^2 + epsilon) * scale + bias``; the batch term uses its running
    statistics in evaluation. Params ``scale``, ``bias`` (per channel), ``mean_logits``,
    ``var_logits`` (``(3,)``, ordered IN, LN, BN; init ``logits_init``, zeros: equal weights);
    ``batch_stats`` ``mean``, ``var``, ``count``. See :func:`normjax.switchable_norm`.
    """

    use_running_average: bool | None = None
    feature_axes: int = -1
    batch_axes: Axes = 0
    momentum: float | None = 0.99
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = initializers.zeros
    scale_init: Initializer = initializers.ones
    logits_init: Initializer = initializers.zeros
    axis_name: Any = None
    axis_index_groups: Any = None
    running_var: Literal["biased", "unbiased"] = "biased"
    channel_axis: int | None = None  # the deprecated name of feature_axes

    def __post_init__(self) -> None:
        take_channel_axis(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: ArrayLike, use_running_average: bool | None = None) -> jax.Array:
        """Normalizes ``x`` (at least one spatial axis)."""
        x = jnp.asarray(x)
        c = single_axis(self.feature_axes, x.ndim, name="feature_axes")
        state, variables = running_state(self, batch_norm_init(x.shape[c]))
        scale, bias = linen_scale_bias(
            self, (x.shape[c],), use_scale=self.use_scale, use_bias=self.use_bias,
            scale_init=self.scale_init, bias_init=self.bias_init, param_dtype=self.param_dtype)
        mean_logits = self.param("mean_logits", self.logits_init, (3,), self.param_dtype)
        var_logits = self.param("var_logits", self.logits_init, (3,), self.param_dtype)
        train = training(self, use_running_average)
        y, new = switchable_norm(
            x, state, scale=scale, bias=bias, mean_logits=mean_logits, var_logits=var_logits,
            train=train, feature_axes=c, batch_axes=self.batch_axes, decay=self.momentum,
            epsilon=self.epsilon, axis_name=axis_name_of(self),
            axis_index_groups=self.axis_index_groups, running_var=self.running_var,
            dtype=dtype_like_flax(self.dtype, x, scale, bias))
        store(self, variables, new, train)
        return y

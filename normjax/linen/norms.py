"""``normjax.linen`` LayerNorm, RMSNorm, GroupNorm and InstanceNorm: flax's layers over
normjax's pure functions.

Each layer keeps flax.linen's attributes, defaults (except ``use_fast_variance=False``: the
stable guarded variance) and parameter names (``params/scale``, ``params/bias``), so a
checkpoint written with flax loads unchanged. The math is in :func:`normjax.layer_norm`,
:func:`normjax.rms_norm`, :func:`normjax.group_norm` and :func:`normjax.instance_norm`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Axes, Dtype, Initializer
from jax.nn import initializers

from normjax._checks import canonicalize_axes, feature_shape
from normjax._flax_common import (
    check_float32_reductions,
    dtype_like_flax,
    group_norm_batch_axes,
    instance_feature_axes,
    resolve_num_groups,
)
from normjax._typing import ArrayLike
from normjax.linen._base import linen_scale_bias
from normjax.norms.group_norm import group_norm
from normjax.norms.instance_norm import instance_norm
from normjax.norms.layer_norm import layer_norm
from normjax.norms.rms_norm import rms_norm

__all__ = ["GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]



class LayerNorm(nn.Module):
    """Layer Normalization (Ba, Kiros & Hinton, 2016, arXiv:1607.06450), flax's attributes.

    ``y = (x - E[x]) / sqrt(Var[x] + epsilon) * scale + bias`` with the statistics over
    ``reduction_axes`` (per example) and ``scale``/``bias`` on ``feature_axes``.
    """

    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = initializers.zeros
    scale_init: Initializer = initializers.ones
    reduction_axes: Axes = -1
    feature_axes: Axes = -1
    axis_name: Any = None
    axis_index_groups: Any = None
    use_fast_variance: bool = False
    force_float32_reductions: bool = True

    @nn.compact
    def __call__(self, x: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
        """Normalizes ``x``; ``mask`` (broadcastable to ``x``) selects what enters the stats."""
        check_float32_reductions(self.force_float32_reductions, "LayerNorm")
        x = jnp.asarray(x)
        features = canonicalize_axes(self.feature_axes, x.ndim, name="feature_axes")
        scale, bias = linen_scale_bias(
            self, feature_shape(x.shape, features), use_scale=self.use_scale,
            use_bias=self.use_bias, scale_init=self.scale_init, bias_init=self.bias_init,
            param_dtype=self.param_dtype,
        )
        return layer_norm(
            x, scale, bias, reduction_axes=self.reduction_axes, feature_axes=features,
            epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups, fast_variance=self.use_fast_variance,
            dtype=dtype_like_flax(self.dtype, x, scale, bias),
        )


class RMSNorm(nn.Module):
    """RMS normalization (Zhang & Sennrich, 2019, arXiv:1910.07467), flax's attributes.

    ``y = x / sqrt(E[x^2] + epsilon) * scale`` over ``reduction_axes``. ``use_fast_variance``
    is accepted for flax compatibility and has no effect (there is no mean to subtract).
    """

    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_scale: bool = True
    scale_init: Initializer = initializers.ones
    reduction_axes: Axes = -1
    feature_axes: Axes = -1
    axis_name: Any = None
    axis_index_groups: Any = None
    use_fast_variance: bool = False
    force_float32_reductions: bool = True

    @nn.compact
    def __call__(self, x: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
        """Normalizes ``x``; ``mask`` (broadcastable to ``x``) selects what enters the stats."""
        check_float32_reductions(self.force_float32_reductions, "RMSNorm")
        x = jnp.asarray(x)
        features = canonicalize_axes(self.feature_axes, x.ndim, name="feature_axes")
        scale, _ = linen_scale_bias(
            self, feature_shape(x.shape, features), use_scale=self.use_scale, use_bias=False,
            scale_init=self.scale_init, bias_init=initializers.zeros,
            param_dtype=self.param_dtype,
        )
        return rms_norm(
            x, scale, reduction_axes=self.reduction_axes, feature_axes=features,
            epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
            dtype=dtype_like_flax(self.dtype, x, scale),
        )


class GroupNorm(nn.Module):
    """Group Normalization (Wu & He, 2018, arXiv:1803.08494), flax's attributes.

    The last axis holds the channels, split into ``num_groups`` groups (or groups of
    ``group_size``; give exactly one: pass ``num_groups=None`` with ``group_size``). The
    statistics run over ``reduction_axes`` (default: all but the leading batch axis) and the
    channels of a group; ``scale``/``bias`` are per channel.
    """

    num_groups: int | None = 32
    group_size: int | None = None
    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = initializers.zeros
    scale_init: Initializer = initializers.ones
    reduction_axes: Axes | None = None
    axis_name: Any = None
    axis_index_groups: Any = None
    use_fast_variance: bool = False
    force_float32_reductions: bool = True

    @nn.compact
    def __call__(self, x: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
        """Normalizes ``x`` (channels last); ``mask`` selects what enters the statistics."""
        check_float32_reductions(self.force_float32_reductions, "GroupNorm")
        x = jnp.asarray(x)
        batch_axes = group_norm_batch_axes(x.ndim, self.reduction_axes)
        groups = resolve_num_groups(x.shape[-1], self.num_groups, self.group_size)
        scale, bias = linen_scale_bias(
            self, (x.shape[-1],), use_scale=self.use_scale, use_bias=self.use_bias,
            scale_init=self.scale_init, bias_init=self.bias_init, param_dtype=self.param_dtype,
        )
        return group_norm(
            x, scale, bias, num_groups=groups, feature_axes=-1, batch_axes=batch_axes,
            epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups, fast_variance=self.use_fast_variance,
            dtype=dtype_like_flax(self.dtype, x, scale, bias),
        )


class InstanceNorm(nn.Module):
    """Instance Normalization (Ulyanov et al., 2016, arXiv:1607.08022), flax's attributes.

    Each example (leading axis) and each feature (``feature_axes``) is normalized over the
    remaining axes; ``scale``/``bias`` live on ``feature_axes``.
    """

    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = initializers.zeros
    scale_init: Initializer = initializers.ones
    feature_axes: Axes = -1
    axis_name: Any = None
    axis_index_groups: Any = None
    use_fast_variance: bool = False
    force_float32_reductions: bool = True

    @nn.compact
    def __call__(self, x: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
        """Normalizes ``x``; ``mask`` (broadcastable to ``x``) selects what enters the stats."""
        check_float32_reductions(self.force_float32_reductions, "InstanceNorm")
        x = jnp.asarray(x)
        features = instance_feature_axes(self.feature_axes, x.ndim)
        scale, bias = linen_scale_bias(
            self, feature_shape(x.shape, features), use_scale=self.use_scale,
            use_bias=self.use_bias, scale_init=self.scale_init, bias_init=self.bias_init,
            param_dtype=self.param_dtype,
        )
        return instance_norm(
            x, scale, bias, feature_axes=features, batch_axes=0, epsilon=self.epsilon,
            mask=mask, axis_name=self.axis_name, axis_index_groups=self.axis_index_groups,
            fast_variance=self.use_fast_variance,
            dtype=dtype_like_flax(self.dtype, x, scale, bias),
        )


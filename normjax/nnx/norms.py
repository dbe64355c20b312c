"""``normjax.nnx`` LayerNorm, RMSNorm, GroupNorm and InstanceNorm: flax.nnx's layers over
normjax's pure functions.

Constructor signatures, defaults (except ``use_fast_variance=False``: the stable guarded
variance) and state (``scale``/``bias`` as ``nnx.Param``) are flax.nnx's. The math is in
:func:`normjax.layer_norm`, :func:`normjax.rms_norm`, :func:`normjax.group_norm` and
:func:`normjax.instance_norm`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import initializers
from flax.typing import Axes, Dtype, Initializer

from normjax._flax_common import (
    DEFAULT_PROMOTE_DTYPE,
    group_norm_batch_axes,
    instance_feature_axes,
    promote_like_flax,
    resolve_num_groups,
)
from normjax._typing import ArrayLike
from normjax.nnx._base import ScaleBiasNorm, value_of
from normjax.norms.group_norm import group_norm
from normjax.norms.instance_norm import instance_norm
from normjax.norms.layer_norm import layer_norm
from normjax.norms.rms_norm import rms_norm

__all__ = ["GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]

NO_METADATA: Mapping[str, Any] = MappingProxyType({})
ZEROS: Initializer = initializers.zeros_init()
ONES: Initializer = initializers.ones_init()


class LayerNorm(ScaleBiasNorm):
    """Layer Normalization (Ba, Kiros & Hinton, 2016, arXiv:1607.06450), flax.nnx's signature.

    ``y = (x - E[x]) / sqrt(Var[x] + epsilon) * scale + bias`` over ``reduction_axes``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = False,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        super().__init__(
            num_features, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
            use_bias=use_bias, use_scale=use_scale, bias_init=bias_init, scale_init=scale_init,
            axis_name=axis_name, axis_index_groups=axis_index_groups,
            use_fast_variance=use_fast_variance, promote_dtype=promote_dtype, rngs=rngs,
            bias_metadata=bias_metadata, scale_metadata=scale_metadata,
        )
        self.reduction_axes = reduction_axes
        self.feature_axes = feature_axes

    def __call__(self, x: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
        """Normalizes ``x``; ``mask`` (broadcastable to ``x``) selects what enters the stats."""
        x, scale, bias = self._promoted(x)
        return layer_norm(
            x, scale, bias, reduction_axes=self.reduction_axes, feature_axes=self.feature_axes,
            epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups, fast_variance=self.use_fast_variance,
        )


class RMSNorm(ScaleBiasNorm):
    """RMS normalization (Zhang & Sennrich, 2019, arXiv:1910.07467), flax.nnx's signature.

    ``y = x / sqrt(E[x^2] + epsilon) * scale`` over ``reduction_axes``;
    ``use_fast_variance`` is accepted for compatibility and has no effect.
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_scale: bool = True,
        scale_init: Initializer = initializers.ones,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = False,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        super().__init__(
            num_features, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
            use_bias=False, use_scale=use_scale, bias_init=ZEROS,
            scale_init=scale_init, axis_name=axis_name, axis_index_groups=axis_index_groups,
            use_fast_variance=use_fast_variance, promote_dtype=promote_dtype, rngs=rngs,
            bias_metadata=NO_METADATA, scale_metadata=scale_metadata,
        )
        del self.bias, self.use_bias
        self.reduction_axes = reduction_axes
        self.feature_axes = feature_axes

    def __call__(self, x: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
        """Normalizes ``x``; ``mask`` (broadcastable to ``x``) selects what enters the stat."""
        x, scale = promote_like_flax(self.promote_dtype, (x, value_of(self.scale)), self.dtype)
        return rms_norm(
            x, scale, reduction_axes=self.reduction_axes, feature_axes=self.feature_axes,
            epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
        )


class GroupNorm(ScaleBiasNorm):
    """Group Normalization (Wu & He, 2018, arXiv:1803.08494), flax.nnx's signature.

    The last axis holds ``num_features`` channels in ``num_groups`` groups (or groups of
    ``group_size``: pass ``num_groups=None``); statistics over ``reduction_axes`` (default:
    all but the leading batch axis) and the channels of a group.
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int | None = 32,
        group_size: int | None = None,
        *,
        epsilon: float = 1e-6,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        reduction_axes: Axes | None = None,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = False,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        self.num_groups = resolve_num_groups(num_features, num_groups, group_size, noun="features")
        self.group_size = num_features // self.num_groups
        self.feature_axis = -1
        super().__init__(
            num_features, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
            use_bias=use_bias, use_scale=use_scale, bias_init=bias_init, scale_init=scale_init,
            axis_name=axis_name, axis_index_groups=axis_index_groups,
            use_fast_variance=use_fast_variance, promote_dtype=promote_dtype, rngs=rngs,
            bias_metadata=bias_metadata, scale_metadata=scale_metadata,
        )
        self.reduction_axes = reduction_axes

    def __call__(self, x: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
        """Normalizes ``x`` (channels last); ``mask`` selects what enters the statistics."""
        x, scale, bias = self._promoted(x)
        return group_norm(
            x, scale, bias, num_groups=self.num_groups, feature_axes=-1,
            batch_axes=group_norm_batch_axes(jnp.ndim(x), self.reduction_axes),
            epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups, fast_variance=self.use_fast_variance,
        )


class InstanceNorm(ScaleBiasNorm):
    """Instance Normalization (Ulyanov et al., 2016, arXiv:1607.08022), flax.nnx's signature.

    Each example (leading axis) and feature (``feature_axes``) is normalized over the other
    axes.
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = initializers.zeros,
        scale_init: Initializer = initializers.ones,
        feature_axes: Axes = -1,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = False,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        super().__init__(
            num_features, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
            use_bias=use_bias, use_scale=use_scale, bias_init=bias_init, scale_init=scale_init,
            axis_name=axis_name, axis_index_groups=axis_index_groups,
            use_fast_variance=use_fast_variance, promote_dtype=promote_dtype, rngs=rngs,
            bias_metadata=bias_metadata, scale_metadata=scale_metadata,
        )
        self.feature_axes = feature_axes

    def __call__(self, x: ArrayLike, *, mask: ArrayLike | None = None) -> jax.Array:
        """Normalizes ``x``; ``mask`` (broadcastable to ``x``) selects what enters the stats."""
        x, scale, bias = self._promoted(x)
        return instance_norm(
            x, scale, bias, feature_axes=instance_feature_axes(self.feature_axes, jnp.ndim(x)),
            batch_axes=0, epsilon=self.epsilon, mask=mask, axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups, fast_variance=self.use_fast_variance,
        )

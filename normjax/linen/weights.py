"""``normjax.linen`` SpectralNorm and WeightStandardization: layer wrappers over
:func:`normjax.spectral_norm` and :func:`normjax.weight_standardization` /
:func:`normjax.scaled_weight_standardization`.

Like flax's ``nn.SpectralNorm`` and ``nn.WeightNorm``, each wraps a layer instance
(``SpectralNorm(nn.Dense(4))``) and transforms the wrapped layer's ``params`` on their way in
(``nn.map_variables``): the layer keeps its raw parameters, the transformed ones are used for
the call only. The wrapper's own variables are named ``"<layer name>/<param path>/<name>"``.
Wrap one layer (not a container of several), so that each parameter path is unique.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Axes, Dtype, Initializer
from jax.nn import initializers

from normjax._checks import canonicalize_axes, feature_shape
from normjax._flax_common import (
    check_gain,
    check_n_steps,
    dtype_like_flax,
    non_matrix_error,
    ws_epsilon,
)
from normjax.weights.spectral_norm import SpectralNormState, spectral_norm
from normjax.weights.weight_norm import weight_norm
from normjax.weights.weight_standardization import (
    scaled_weight_standardization,
    weight_standardization,
)

__all__ = ["SpectralNorm", "WeightNorm", "WeightStandardization"]


def variable_name(layer: nn.Module, path: tuple[Any, ...]) -> str:
    """``"<layer name>/<param path>"`` for a ``params`` leaf at ``path`` (collection first)."""
    return f"{layer.name}/" + jax.tree_util.keystr(path[1:], simple=True, separator="/")










class SpectralNorm(nn.Module):
    """Spectral Normalization (Miyato et al., 2018, arXiv:1802.05957) of a wrapped layer.

    Every variable leaf of rank >= 2 of ``layer_instance`` (every collection, as flax maps
    them) is used as ``W / sigma(W)``, ``sigma`` estimated by ``n_steps`` power iterations
    from the stored vector ``u`` (Conv kernels as ``(-1, out)`` matrices;
    :func:`normjax.spectral_norm`). flax.linen's SpectralNorm, numerics and variables
    included: same attributes and call (``update_stats=True`` stores the new ``u`` and
    ``sigma``; pass ``mutable=[collection_name]``), variables
    ``<collection_name>/<layer>/<path>/u`` (``(1, out)``, a standard normal draw from the
    ``params`` stream at init) and ``.../sigma`` (``()``, 1 at init); ``n_steps < 1``
    leaves the weights unnormalized.
    """

    layer_instance: nn.Module
    n_steps: int = 1
    epsilon: float = 1e-12
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    error_on_non_matrix: bool = False
    collection_name: str = "batch_stats"

    @nn.compact
    def __call__(self, *args: Any, update_stats: bool, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its matrices spectrally normalized."""
        check_n_steps(self.n_steps)

        def forward(layer: nn.Module) -> Any:
            return layer(*args, **kwargs)

        normalize = partial(self._normalize, update_stats=update_stats)
        return nn.map_variables(
            forward, trans_in_fn=lambda vs: jax.tree_util.tree_map_with_path(normalize, vs),
            init=self.is_initializing(), mutable=True,
        )(self.layer_instance)

    def _normalize(self, path: tuple[Any, ...], value: Any, *, update_stats: bool) -> Any:
        """``W / sigma(W)`` for a matrix (or higher-rank kernel); vectors pass through."""
        value = jnp.asarray(value)
        if value.ndim <= 1 or self.n_steps < 1:
            return value
        name = variable_name(self.layer_instance, path)
        if value.ndim > 2 and self.error_on_non_matrix:
            raise non_matrix_error(
                f"Input is {value.ndim}D but error_on_non_matrix is True", name, value.shape)
        u_name = f"{name}/u"
        key = None if self.has_variable(self.collection_name, u_name) else self.make_rng(
            "params")
        u = self.variable(self.collection_name, u_name, jax.random.normal, key,
                          (1, value.shape[-1]), self.param_dtype)
        sigma = self.variable(self.collection_name, f"{name}/sigma", jnp.ones, (),
                              self.param_dtype)
        w, new = spectral_norm(value, SpectralNormState(u.value[0], sigma.value),
                               n_power_iterations=self.n_steps, train=update_stats,
                               epsilon=self.epsilon)
        if update_stats:
            u.value, sigma.value = new.u[None], new.sigma
        return w.astype(dtype_like_flax(self.dtype, value, u.value))


class WeightStandardization(nn.Module):
    """Weight Standardization of a wrapped layer's kernels (Qiao et al., 2019, arXiv:1903.10520;
    scaled: Brock et al., 2021, arXiv:2101.08692).

    Every ``params`` leaf of ``layer_instance`` whose name (``"<layer>/<path>"``) contains one
    of ``variable_filter`` (default ``{"kernel"}``; ``None`` or empty: all) is standardized per
    output feature (``feature_axes``, default the last) over its fan-in axes::

        WS:         W_hat = (W - mean(W)) / sqrt(var(W) + epsilon)              (epsilon 1e-5)
        scaled WS:  W_hat = gain * gamma * (W - mean(W)) / sqrt(max(N var(W), epsilon))
                                                                   (N the fan-in; epsilon 1e-4)

    ``scaled=True`` selects scaled WS, with ``gamma`` the activation constant
    (:func:`normjax.activation_gamma`) and, unless ``use_gain=False``, a learnable ``gain``
    param ``"<layer>/<path>/gain"`` of the feature shape (init ``gain_init``, ones).
    ``epsilon=None`` uses each form's default.
    """

    layer_instance: nn.Module
    scaled: bool = False
    use_gain: bool | None = None
    gamma: float = 1.0
    epsilon: float | None = None
    feature_axes: Axes = -1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    gain_init: Initializer = initializers.ones
    variable_filter: Iterable[str] | None = dataclasses.field(
        default_factory=lambda: {"kernel"}
    )

    @nn.compact
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its selected kernels standardized."""
        use_gain = check_gain(self.scaled, self.use_gain)

        def forward(layer: nn.Module) -> Any:
            return layer(*args, **kwargs)

        standardize = partial(self._standardize, use_gain=use_gain)
        return nn.map_variables(
            forward, mapped_collections="params",
            trans_in_fn=lambda vs: jax.tree_util.tree_map_with_path(standardize, vs),
            init=self.is_initializing(),
        )(self.layer_instance)

    def _standardize(self, path: tuple[Any, ...], value: Any, *, use_gain: bool) -> Any:
        """The standardized kernel for a selected parameter; others pass through."""
        value = jnp.asarray(value)
        name = variable_name(self.layer_instance, path)
        if self.variable_filter and not any(key in name for key in self.variable_filter):
            return value
        if not self.scaled:
            w = weight_standardization(value, feature_axes=self.feature_axes,
                                       **ws_epsilon(self.epsilon))
            return w.astype(dtype_like_flax(self.dtype, value))
        gain = None
        if use_gain:
            features = canonicalize_axes(self.feature_axes, value.ndim, name="feature_axes")
            gain = self.param(f"{name}/gain", self.gain_init,
                              feature_shape(value.shape, features), self.param_dtype)
        w = scaled_weight_standardization(value, gain, feature_axes=self.feature_axes,
                                          gamma=self.gamma, **ws_epsilon(self.epsilon))
        return w.astype(dtype_like_flax(self.dtype, value, gain))


class WeightNorm(nn.Module):
    """Weight Normalization (Salimans & Kingma, 2016, arXiv:1602.07868) of a wrapped layer.

    ``nn.WeightNorm(nn.Dense(4))`` in flax's layout: every variable of ``layer_instance``
    whose path (``"<layer name>/<variable path>"``) contains one of the strings in
    ``variable_filter`` (default ``{"kernel"}``; ``None`` or empty: every variable) is used
    as ``w = scale * v / sqrt(sum(v^2) + epsilon)``, the sum over the axes not in
    ``feature_axes`` (``None``: all axes, one scalar scale). The wrapped layer keeps its own
    ``v`` parameters; the scales are this module's params ``"<layer name>/<path>/scale"``.
    """

    layer_instance: nn.Module
    epsilon: float = 1e-12
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_scale: bool = True
    scale_init: Initializer = initializers.ones
    feature_axes: Axes | None = -1
    variable_filter: Iterable[str] | None = dataclasses.field(
        default_factory=lambda: {"kernel"}
    )

    @nn.compact
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its selected variables weight-normalized."""

        def forward(layer: nn.Module) -> Any:
            return layer(*args, **kwargs)

        return nn.map_variables(
            forward,
            trans_in_fn=lambda vs: jax.tree_util.tree_map_with_path(self._normalize, vs),
            init=self.is_initializing(),
        )(self.layer_instance)

    def _normalize(self, path: tuple[Any, ...], value: jax.Array) -> jax.Array:
        """``scale * v / ||v||`` for a selected variable; other variables pass through."""
        value = jnp.asarray(value)
        name = f"{self.layer_instance.name}/" + jax.tree_util.keystr(
            path[1:], simple=True, separator="/"
        )
        if self.variable_filter and not any(key in name for key in self.variable_filter):
            return value
        features = (
            () if self.feature_axes is None
            else canonicalize_axes(self.feature_axes, value.ndim, name="feature_axes")
        )
        scale = None
        if self.use_scale:
            shape = feature_shape(value.shape, features)
            scale = self.param(f"{name}/scale", self.scale_init, shape, self.param_dtype)
        w = weight_norm(value, scale, feature_axes=features, epsilon=self.epsilon)
        return w.astype(dtype_like_flax(self.dtype, value, scale))

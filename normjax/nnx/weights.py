"""``normjax.nnx`` SpectralNorm and WeightStandardization: layer wrappers over
:func:`normjax.spectral_norm` and :func:`normjax.weight_standardization` /
:func:`normjax.scaled_weight_standardization`.

Each wraps a layer (``SpectralNorm(nnx.Linear(8, 4, rngs=rngs), rngs=rngs)``). As in
:class:`normjax.nnx.WeightNorm`, the wrapped layer's parameters keep holding the raw weights:
the transformed ones are swapped in for the duration of the call only (flax.nnx's
``SpectralNorm`` overwrites them), so gradients reach the raw weights through the transform.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import initializers
from flax.typing import Axes, Dtype, Initializer

from normjax._checks import canonicalize_axes, feature_shape
from normjax._flax_common import (
    DEFAULT_PROMOTE_DTYPE,
    check_gain,
    check_n_steps,
    dtype_like_flax,
    first_from,
    non_matrix_error,
    promote_like_flax,
    ws_epsilon,
)
from normjax.nnx._base import KERNELS, Path, missing, params_of, swapped_in
from normjax.weights.spectral_norm import SpectralNormState, spectral_norm
from normjax.weights.weight_norm import weight_norm
from normjax.weights.weight_standardization import (
    scaled_weight_standardization,
    weight_standardization,
)

__all__ = ["SpectralNorm", "WeightNorm", "WeightStandardization"]

class SpectralNorm(nnx.Module):
    """Spectral Normalization (Miyato et al., 2018, arXiv:1802.05957) of a wrapped layer.

    Every ``nnx.Param`` of rank >= 2 of ``layer_instance`` is used as ``W / sigma(W)``,
    ``sigma`` estimated by ``n_steps`` power iterations from the stored vector ``u`` (Conv
    kernels as ``(-1, out)`` matrices). flax.nnx's signature, numerics and state:
    ``batch_stats`` maps ``path + ("u",)`` to an ``nnx.BatchStat`` of shape ``(1, out)``
    (``initializers.normal()``, std 0.01, one ``rngs.params()`` key per matrix in state
    order) and ``path + ("sigma",)`` to a scalar one (1). ``update_stats`` (constructor,
    call, or ``.train()`` / ``.eval()`` through ``use_running_average = not update_stats``)
    stores the new ``u`` and ``sigma``; ``n_steps < 1`` leaves the weights unnormalized.
    One difference (docs/switching_from_flax.md): flax overwrites the wrapped layer's
    parameters with ``W / sigma`` on every call (so repeated calls divide again); here the
    layer keeps ``W`` and the normalized weight is used for the call only.
    See :func:`normjax.spectral_norm`.
    """

    def __init__(
        self,
        layer_instance: nnx.Module,
        *,
        n_steps: int = 1,
        epsilon: float = 1e-12,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        error_on_non_matrix: bool = False,
        update_stats: bool = True,
        rngs: nnx.Rngs,
    ) -> None:
        check_n_steps(n_steps)
        self.layer_instance = layer_instance
        self.n_steps = n_steps
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.error_on_non_matrix = error_on_non_matrix
        self.use_running_average = not update_stats
        stats = {}
        for path, param in self._matrices():
            out = jnp.shape(param[...])[-1]
            u = initializers.normal()(rngs.params(), (1, out), param_dtype)
            stats[(*path, "u")] = nnx.BatchStat(u)
            stats[(*path, "sigma")] = nnx.BatchStat(jnp.ones((), param_dtype))
        self.batch_stats = nnx.data(stats)

    def _matrices(self) -> list[tuple[Path, nnx.Variable]]:
        """The wrapped layer's params of rank >= 2 (vectors and scalars are left alone)."""
        if self.n_steps < 1:
            return []
        selected = params_of(self.layer_instance, lambda _, v: jnp.ndim(v[...]) >= 2)
        for path, param in selected:
            ndim = jnp.ndim(param[...])
            if ndim > 2 and self.error_on_non_matrix:
                raise non_matrix_error(
                    f"Layer instance parameter is {ndim}D but error_on_non_matrix is True",
                    path, jnp.shape(param[...]))
        return selected

    def _normalized(self, path: Path, w: jax.Array, update: bool) -> jax.Array:
        """``W / sigma(W)``, storing the new ``u`` and ``sigma`` when ``update``."""
        if (*path, "u") not in self.batch_stats:
            raise missing("SpectralNorm", path)
        u, sigma = self.batch_stats[(*path, "u")], self.batch_stats[(*path, "sigma")]
        w_sn, new = spectral_norm(w, SpectralNormState(u[...][0], sigma[...]),
                                  n_power_iterations=self.n_steps, train=update,
                                  epsilon=self.epsilon)
        if update:
            u[...], sigma[...] = new.u[None], new.sigma
        return w_sn.astype(dtype_like_flax(self.dtype, w, u[...]))

    def __call__(self, x: Any, update_stats: bool | None = None, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its matrices spectrally normalized."""
        stored = None if self.use_running_average is None else not self.use_running_average
        update = first_from(update_stats, stored, name="update_stats", owner="SpectralNorm")
        replacements = [(param, self._normalized(path, param[...], update))
                        for path, param in self._matrices()]
        with swapped_in(replacements):
            return self.layer_instance(x, **kwargs)

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by ``nnx.view``: sets ``use_running_average`` (``not update_stats``)."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


class WeightStandardization(nnx.Module):
    """Weight Standardization of a wrapped layer's kernels (Qiao et al., 2019, arXiv:1903.10520;
    scaled: Brock et al., 2021, arXiv:2101.08692).

    Every ``nnx.Param`` of ``layer_instance`` selected by ``variable_filter`` (default
    ``nnx.PathContains("kernel")``) is standardized per output feature (``feature_axes``)
    over its fan-in axes::

        WS:         W_hat = (W - mean(W)) / sqrt(var(W) + epsilon)              (epsilon 1e-5)
        scaled WS:  W_hat = gain * gamma * (W - mean(W)) / sqrt(max(N var(W), epsilon))
                                                                   (N the fan-in; epsilon 1e-4)

    ``scaled=True`` selects scaled WS (``gamma``: :func:`normjax.activation_gamma`); unless
    ``use_gain=False`` it has a learnable ``nnx.Param`` gain per selected parameter in
    ``gains[path]`` (init ``gain_init``, ones; needs ``rngs``). ``epsilon=None`` uses each
    form's default.
    """

    def __init__(
        self,
        layer_instance: nnx.Module,
        *,
        scaled: bool = False,
        use_gain: bool | None = None,
        gamma: float = 1.0,
        epsilon: float | None = None,
        feature_axes: Axes = -1,
        gain_init: Initializer = initializers.ones,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        variable_filter: Any = KERNELS,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        self.layer_instance = layer_instance
        self.scaled = scaled
        self.use_gain = check_gain(scaled, use_gain)
        self.gamma = gamma
        self.epsilon = epsilon
        self.feature_axes = feature_axes
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.variable_filter = nnx.filterlib.to_predicate(variable_filter)
        self.promote_dtype = promote_dtype
        self.gains = nnx.data(None)
        if self.use_gain:
            if rngs is None:
                raise ValueError("WeightStandardization(scaled=True) creates learnable gains "
                                 "and needs rngs=nnx.Rngs(...); or pass use_gain=False.")
            self.gains = nnx.data({
                path: nnx.Param(gain_init(rngs.params(), self._gain_shape(p), param_dtype))
                for path, p in params_of(layer_instance, self.variable_filter)
            })

    def _gain_shape(self, param: nnx.Variable) -> tuple[int, ...]:
        shape = jnp.shape(param[...])
        return feature_shape(shape, canonicalize_axes(self.feature_axes, len(shape),
                                                       name="feature_axes"))

    def _standardized(self, path: Path, w: jax.Array) -> jax.Array:
        if not self.scaled:
            (w,) = promote_like_flax(self.promote_dtype, (w,), self.dtype)
            return weight_standardization(w, feature_axes=self.feature_axes,
                                          **ws_epsilon(self.epsilon))
        gain = None
        if self.use_gain:
            if path not in self.gains:
                raise missing("WeightStandardization", path)
            gain = self.gains[path][...]
        w, gain = promote_like_flax(self.promote_dtype, (w, gain), self.dtype)
        return scaled_weight_standardization(w, gain, feature_axes=self.feature_axes,
                                             gamma=self.gamma, **ws_epsilon(self.epsilon))

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its selected kernels standardized."""
        replacements = [(param, self._standardized(path, param[...]))
                        for path, param in params_of(self.layer_instance, self.variable_filter)]
        with swapped_in(replacements):
            return self.layer_instance(x, *args, **kwargs)





class WeightNorm(nnx.Module):
    """Weight Normalization (Salimans & Kingma, 2016, arXiv:1602.07868) of a wrapped layer.

    ``WeightNorm(nnx.Linear(8, 4, rngs=rngs), rngs=rngs)``: every ``nnx.Param`` of
    ``layer_instance`` selected by ``variable_filter`` (default ``nnx.PathContains("kernel")``)
    is used as ``w = scale * v / sqrt(sum(v^2) + epsilon)``, the sum over the axes not in
    ``feature_axes`` (``None``: all axes). The scales live in ``scales[path]``, as in
    flax.nnx, but as trainable ``nnx.Param`` (flax keeps plain arrays there). The wrapped
    layer's parameters keep holding ``v``: the normalized weights are swapped in for the
    duration of the call only (flax.nnx overwrites them).
    """

    def __init__(
        self,
        layer_instance: nnx.Module,
        *,
        feature_axes: Axes | None = -1,
        use_scale: bool = True,
        scale_init: Initializer = initializers.ones,
        epsilon: float = 1e-12,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        variable_filter: Any = KERNELS,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
    ) -> None:
        self.layer_instance = layer_instance
        self.feature_axes = () if feature_axes is None else feature_axes
        self.use_scale = use_scale
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.variable_filter = nnx.filterlib.to_predicate(variable_filter)
        self.promote_dtype = promote_dtype
        self.scales = nnx.data(None)
        if use_scale:
            self.scales = nnx.data({
                path: nnx.Param(scale_init(rngs.params(), self._scale_shape(param), param_dtype))
                for path, param in self._selected()
            })

    def _selected(self) -> list[tuple[tuple[Any, ...], nnx.Variable]]:
        """``(path, variable)`` of the wrapped layer's params chosen by the filter."""
        state = nnx.state(self.layer_instance, nnx.Param)
        return [(p, v) for p, v in nnx.to_flat_state(state) if self.variable_filter(p, v)]

    def _scale_shape(self, param: nnx.Variable) -> tuple[int, ...]:
        shape = jnp.shape(param[...])
        return feature_shape(shape, canonicalize_axes(self.feature_axes, len(shape)))

    def _normalized(self, path: tuple[Any, ...], v: jax.Array) -> jax.Array:
        """``scale * v / ||v||`` for the parameter at ``path``."""
        scale = self.scales[path][...] if self.use_scale else None
        v, scale = promote_like_flax(self.promote_dtype, (v, scale), self.dtype)
        features = canonicalize_axes(self.feature_axes, v.ndim, name="feature_axes")
        return weight_norm(v, scale, feature_axes=features, epsilon=self.epsilon)

    @contextmanager
    def _swapped_in(self) -> Iterator[None]:
        """Swaps ``w`` in for every selected ``v`` and restores ``v`` afterwards."""
        selected = self._selected()
        missing = [path for path, _ in selected if self.use_scale and path not in self.scales]
        if missing:
            raise RuntimeError(
                f"WeightNorm has no scale for the wrapped layer's parameters {missing}; the "
                "wrapped layer's parameters must not change after WeightNorm is built."
            )
        originals = [variable[...] for _, variable in selected]
        try:
            for (path, variable), v in zip(selected, originals, strict=True):
                variable[...] = self._normalized(path, v)
            yield
        finally:
            for (_, variable), v in zip(selected, originals, strict=True):
                variable[...] = v

    def __call__(self, x: jax.typing.ArrayLike, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its selected parameters weight-normalized."""
        with self._swapped_in():
            return self.layer_instance(x, *args, **kwargs)

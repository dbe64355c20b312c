"""normjax.nnx's weight wrappers against their pure functions and flax: SpectralNorm (explicit
``u`` state), WeightStandardization, and gradients through both."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import normjax
from normjax import nnx as nr
from normjax.weights.spectral_norm import SpectralNormState
from tests.research_parity import (
    assert_close,
    data,
    general_layer,
    perturb,
    pure_dict,
    shapes,
)

# --------------------------------------------------------------------------- SpectralNorm




def _spectral_steps(x: jax.Array) -> tuple[Any, ...]:
    """One training call and one evaluation call, with the pure function's results."""
    layer = nr.SpectralNorm(nnx.Linear(4, 5, rngs=nnx.Rngs(0)), n_steps=2, rngs=nnx.Rngs(1))
    kernel, bias = layer.layer_instance.kernel[...], layer.layer_instance.bias[...]
    state = SpectralNormState(*(layer.batch_stats[("kernel", k)][...] for k in ("u", "sigma")))
    w, new = normjax.spectral_norm(kernel, state._replace(u=state.u[0]), n_power_iterations=2,
                                   train=True)
    w_eval = normjax.spectral_norm(kernel, new, n_power_iterations=2, train=False)[0]
    y = layer(x)
    stored = [layer.batch_stats[("kernel", k)][...] for k in ("u", "sigma")]
    layer.eval()
    e = layer(x)
    after_eval = [layer.batch_stats[("kernel", k)][...] for k in ("u", "sigma")]
    ours = dict(y=y, e=e, u=stored[0], sigma=stored[1], eval_u=after_eval[0],
                eval_sigma=after_eval[1], kernel=layer.layer_instance.kernel[...])
    theirs = dict(y=x @ w + bias[None], e=x @ w_eval + bias[None], u=new.u[None],
                  sigma=new.sigma, eval_u=new.u[None], eval_sigma=new.sigma, kernel=kernel)
    flax_layer = nnx.SpectralNorm(nnx.Linear(4, 5, rngs=nnx.Rngs(0)), n_steps=2,
                                  rngs=nnx.Rngs(1))
    flax_u0 = flax_layer.batch_stats[("kernel", "u")][...]
    return ours, theirs, (state.u, flax_u0), (y, flax_layer(x))


def test_spectral_norm_matches_its_pure_function_and_flax_state() -> None:
    ours, theirs, (u0, flax_u0), (y, flax_y) = jax.jit(_spectral_steps)(data((3, 4)))
    for name in ours:  # eval leaves u, sigma unchanged; the raw kernel is kept
        assert_close(ours[name], theirs[name], tol=1e-5)
    np.testing.assert_array_equal(u0, flax_u0)  # flax's initial u, key for key
    assert_close(y, flax_y, tol=1e-6)  # and its first call
    abstract = [nnx.eval_shape(lambda cls=cls: cls(nnx.Linear(4, 5, rngs=nnx.Rngs(0)),
                                                   rngs=nnx.Rngs(1)))
                for cls in (nr.SpectralNorm, nnx.SpectralNorm)]
    flat = [{p: (type(v).__name__, v.shape) for p, v in nnx.to_flat_state(nnx.state(m))}
            for m in abstract]
    assert flat[0] == flat[1]  # flax.nnx's state layout


def test_spectral_norm_update_stats_and_higher_rank_kernels() -> None:
    x = data((2, 3, 5))
    layer = nr.SpectralNorm(general_layer(nnx.Rngs(0)), update_stats=False, rngs=nnx.Rngs(1))
    assert layer.use_running_average is True
    assert shapes(layer.batch_stats[("kernel", "u")][...]) == (1, 4)
    u0 = layer.batch_stats[("kernel", "u")][...]
    frozen, updating = (nnx.jit(lambda layer, x, flag=flag: layer(x, update_stats=flag))
                        for flag in (None, True))
    frozen(layer, x)
    np.testing.assert_array_equal(layer.batch_stats[("kernel", "u")][...], u0)
    updating(layer, x)
    assert not np.allclose(layer.batch_stats[("kernel", "u")][...], u0)
    layer.train()
    assert layer.use_running_average is False


@pytest.mark.parametrize("wrapper", ["spectral", "ws"])
def test_wrapper_gradients_reach_the_raw_kernel(wrapper: str) -> None:
    x = data((3, 4))
    if wrapper == "spectral":
        layer = nr.SpectralNorm(nnx.Linear(4, 5, rngs=nnx.Rngs(0)), update_stats=False,
                                rngs=nnx.Rngs(1))
        state = SpectralNormState(layer.batch_stats[("kernel", "u")][...][0],
                                  layer.batch_stats[("kernel", "sigma")][...])

        def transform(w: jax.Array) -> jax.Array:
            return normjax.spectral_norm(w, state, train=False)[0]
    else:
        layer = nr.WeightStandardization(nnx.Linear(4, 5, rngs=nnx.Rngs(0)))
        transform = normjax.weight_standardization
    bias = layer.layer_instance.bias[...]

    def loss(layer: nnx.Module) -> jax.Array:
        return jnp.sum(jnp.sin(layer(x)))

    def ref(kernel: jax.Array) -> jax.Array:
        return jnp.sum(jnp.sin(x @ transform(kernel) + bias[None]))

    grads = nnx.jit(nnx.grad(loss))(layer)
    expected = jax.jit(jax.grad(ref))(layer.layer_instance.kernel[...])
    assert_close(grads["layer_instance"]["kernel"][...], expected, tol=1e-5)


# --------------------------------------------------------------------------- WeightStandardization


@pytest.mark.parametrize("scaled", [False, True])
def test_weight_standardization_matches_its_pure_function(scaled: bool) -> None:
    gamma = normjax.activation_gamma(jax.nn.relu)
    x = data((2, 3, 5))

    def run(x: jax.Array) -> tuple[Any, ...]:
        layer = nr.WeightStandardization(general_layer(nnx.Rngs(0)), scaled=scaled, gamma=gamma,
                                         rngs=nnx.Rngs(1))
        perturb(layer)
        kernel = layer.layer_instance.kernel[...]
        if scaled:
            w = normjax.scaled_weight_standardization(kernel, layer.gains[("kernel",)][...],
                                                      gamma=gamma)
        else:
            w = normjax.weight_standardization(kernel)
        y = layer(x)
        reference = nnx.clone(layer.layer_instance)
        reference.kernel[...] = w
        return pure_dict(layer, nnx.Param), y, reference(x), layer.layer_instance.kernel[...]

    params, y, ref, kernel_after = jax.jit(run)(x)
    expected = {"layer_instance": {"kernel": (3, 5, 4), "bias": (4,)}}
    if scaled:
        expected["gains"] = {("kernel",): (4,)}
    assert shapes(params) == expected
    assert_close(y, ref, tol=1e-5)
    np.testing.assert_array_equal(kernel_after, params["layer_instance"]["kernel"])

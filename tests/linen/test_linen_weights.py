"""normjax.linen's weight wrappers against their pure functions and flax: SpectralNorm (explicit
``u`` state) and WeightStandardization."""

from __future__ import annotations

from typing import Any

import flax.linen as fnn
import jax
import pytest

import normjax
from normjax import linen as nr
from normjax.weights.spectral_norm import SpectralNormState
from tests.research_parity import (
    GENERAL,
    KEY,
    assert_close,
    assert_trees_close,
    data,
    perturbed,
    shapes,
)

# --------------------------------------------------------------------------- SpectralNorm

# A layer with a rank-3 (..., in, out) kernel, the layout of a conv kernel (cheaper to compile).


class Parent(fnn.Module):
    """A Dense layer wrapped by ``wrapper`` inside a parent, as in flax's docstring example."""

    wrapper: Any
    n_steps: int

    @fnn.compact
    def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
        return self.wrapper(fnn.Dense(5), n_steps=self.n_steps)(x, update_stats=update_stats)


def test_spectral_norm_matches_its_pure_function_and_flax() -> None:
    x = data((3, 4))
    ours, theirs = Parent(nr.SpectralNorm, 2), Parent(fnn.SpectralNorm, 2)

    def run(x: jax.Array) -> tuple[Any, ...]:
        v = ours.init(KEY, x, update_stats=False)
        y, up = ours.apply(v, x, update_stats=True, mutable=["batch_stats"])
        y_t, up_t = theirs.apply(v, x, update_stats=True, mutable=["batch_stats"])
        e, same = ours.apply({**v, **up}, x, update_stats=False, mutable=["batch_stats"])
        return v, theirs.init(KEY, x, update_stats=False), y, up, y_t, up_t, e, same

    v, v_t, y, up, y_t, up_t, e, same = jax.jit(run)(x)
    assert_trees_close(v, v_t)  # flax's initial u (a normal draw) and sigma, key for key
    assert shapes(v) == {
        "params": {"Dense_0": {"kernel": (4, 5), "bias": (5,)}},
        "batch_stats": {"SpectralNorm_0": {"Dense_0/kernel/u": (1, 5),
                                           "Dense_0/kernel/sigma": ()}},
    }
    stats, params = v["batch_stats"]["SpectralNorm_0"], v["params"]["Dense_0"]
    state = SpectralNormState(stats["Dense_0/kernel/u"][0], stats["Dense_0/kernel/sigma"])
    w, new = normjax.spectral_norm(params["kernel"], state, n_power_iterations=2, train=True)
    assert_close(y, x @ w + params["bias"][None], tol=1e-5)
    new_stats = up["batch_stats"]["SpectralNorm_0"]
    assert_close(new_stats["Dense_0/kernel/u"], new.u[None])
    assert_close(new_stats["Dense_0/kernel/sigma"], new.sigma)
    assert_close(y, y_t)  # flax's SpectralNorm on our variables: a drop-in
    assert_trees_close(dict(up["batch_stats"]), dict(up_t["batch_stats"]))
    assert_trees_close(dict(same["batch_stats"]), dict(up["batch_stats"]))  # eval: no update
    assert_close(e, x @ normjax.spectral_norm(params["kernel"], new, n_power_iterations=2,
                                              train=False)[0] + params["bias"][None], tol=1e-5)


def test_spectral_norm_of_a_higher_rank_kernel() -> None:
    """A rank-3 ``(..., in, out)`` kernel (a conv kernel's layout) is normalized as a matrix."""
    x = data((2, 3, 5))
    module = nr.SpectralNorm(GENERAL())

    def run(x: jax.Array) -> tuple[Any, ...]:
        v = module.init(KEY, x, update_stats=True)
        y = module.apply(v, x, update_stats=False)
        state = SpectralNormState(v["batch_stats"]["layer_instance/kernel/u"][0],
                                  v["batch_stats"]["layer_instance/kernel/sigma"])
        w = normjax.spectral_norm(v["params"]["layer_instance"]["kernel"], state,
                                  train=False)[0]
        params = {"params": {**v["params"]["layer_instance"], "kernel": w}}
        return v, y, GENERAL().apply(params, x)

    v, y, ref = jax.jit(run)(x)
    assert shapes(v["batch_stats"]) == {"layer_instance/kernel/u": (1, 4),
                                        "layer_instance/kernel/sigma": ()}
    assert_close(y, ref)


# --------------------------------------------------------------------------- WeightStandardization


@pytest.mark.parametrize("scaled", [False, True])
def test_weight_standardization_matches_its_pure_function(scaled: bool) -> None:
    gamma = normjax.activation_gamma(jax.nn.relu)
    x = data((2, 3, 5))
    module = nr.WeightStandardization(GENERAL(), scaled=scaled, gamma=gamma)

    def run(x: jax.Array) -> tuple[Any, ...]:
        params = perturbed(module.init(KEY, x)["params"])
        kernel = params["layer_instance"]["kernel"]
        if scaled:
            w = normjax.scaled_weight_standardization(
                kernel, params["layer_instance/kernel/gain"], gamma=gamma)
        else:
            w = normjax.weight_standardization(kernel)
        raw = {"params": {**params["layer_instance"], "kernel": w}}
        return params, module.apply({"params": params}, x), GENERAL().apply(raw, x)

    params, y, ref = jax.jit(run)(x)
    expected = {"layer_instance": {"kernel": (3, 5, 4), "bias": (4,)}}
    if scaled:
        expected["layer_instance/kernel/gain"] = (4,)
    assert shapes(params) == expected
    assert_close(y, ref, tol=1e-5)


def test_weight_standardization_options() -> None:
    x = data((3, 4))
    module = nr.WeightStandardization(fnn.Dense(5), scaled=True, use_gain=False, epsilon=1e-2,
                                      feature_axes=-1)
    v = module.init(KEY, x)
    assert "layer_instance/kernel/gain" not in v["params"]
    p = v["params"]["layer_instance"]
    w = normjax.scaled_weight_standardization(p["kernel"], epsilon=1e-2)
    assert_close(module.apply(v, x), x @ w + p["bias"][None], tol=1e-5)
    everything = nr.WeightStandardization(fnn.Dense(5), variable_filter=None)
    with pytest.raises(ValueError, match="rank >= 2"):  # the bias is not a kernel
        everything.init(KEY, x)

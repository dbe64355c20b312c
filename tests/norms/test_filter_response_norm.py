"""Tests for normjax/frn.py: Filter Response Normalization and TLU."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from normjax.norms.filter_response_norm import filter_response_norm, frn_tlu, tlu
from tests.reference_research import frn_np

C = 4


def _x(shape, seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=shape) * 2 + 0.5, jnp.float32)


def _params():
    return jnp.linspace(0.5, 2.0, C), jnp.linspace(-1.0, 1.0, C), jnp.linspace(-0.5, 0.2, C)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NC"])
def test_against_float64_oracle(layout):
    scale, bias, tau = _params()
    shape, axis = {"NHWC": ((3, 5, 5, C), -1), "NCHW": ((3, C, 5, 5), 1),
                   "NC": ((6, C), -1)}[layout]
    x = _x(shape)
    y = frn_tlu(x, scale, bias, tau, feature_axes=axis, epsilon=1e-3)
    np.testing.assert_allclose(y, frn_np(x, scale, bias, 1e-3, axis, tau), rtol=1e-5,
                               atol=1e-5)
    y = filter_response_norm(x, scale, bias, feature_axes=axis, epsilon=1e-3)
    np.testing.assert_allclose(y, frn_np(x, scale, bias, 1e-3, axis), rtol=1e-5, atol=1e-5)


def test_unit_mean_square_per_example_and_channel_and_scale_invariance():
    x = _x((3, 6, 6, C), seed=1)
    y = np.asarray(filter_response_norm(x, epsilon=0.0), np.float64)
    np.testing.assert_allclose(np.mean(y * y, (1, 2)), 1.0, rtol=1e-5)
    # Each example/channel is normalized on its own: rescaling one example changes nothing.
    x2 = x.at[0].multiply(10.0)
    np.testing.assert_allclose(filter_response_norm(x2, epsilon=0.0), y, rtol=1e-5, atol=1e-5)


def test_tlu_default_is_relu_and_learned_epsilon_is_traced():
    x = _x((2, 3, 3, C), seed=2)
    y = filter_response_norm(x)
    np.testing.assert_array_equal(frn_tlu(x), jnp.maximum(y, 0))
    np.testing.assert_array_equal(tlu(y, jnp.zeros(C)), jnp.maximum(y, 0))
    eps_param = jnp.float32(0.01)
    f = jax.jit(lambda e: frn_tlu(x, epsilon=1e-6 + jnp.abs(e)))
    np.testing.assert_allclose(f(eps_param), frn_np(x, 1.0, 0.0, 1e-6 + 0.01, tau=0.0),
                               rtol=1e-5, atol=1e-5)
    assert jax.grad(lambda e: jnp.sum(f(e)))(eps_param) != 0


def test_jit_vmap_grad():
    scale, bias, tau = _params()
    x = _x((2, 3, 3, C), seed=3)
    f = jax.jit(partial(frn_tlu, epsilon=1e-2))
    np.testing.assert_allclose(f(x, scale, bias, tau), frn_np(x, scale, bias, 1e-2, tau=tau),
                               rtol=1e-5, atol=1e-5)
    per_example = jax.vmap(lambda x: filter_response_norm(x, scale, bias, batch_axes=()))(x)
    np.testing.assert_allclose(per_example, filter_response_norm(x, scale, bias), rtol=1e-6)
    # TLU's kink: keep the check away from y == tau by using the FRN part for the gradient.
    check_grads(jax.jit(lambda x, g, b: filter_response_norm(x, g, b, epsilon=1e-2)),
                (x, scale, bias), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
    g_tau = jax.grad(lambda t: jnp.sum(frn_tlu(x, scale, bias, t)))(tau)
    y = np.asarray(filter_response_norm(x, scale, bias))
    np.testing.assert_array_equal(g_tau, np.sum(y <= np.asarray(tau), (0, 1, 2)))


def test_errors():
    x = _x((2, 3, 3, C))
    with pytest.raises(ValueError, match="tau has shape"):
        tlu(x, jnp.zeros(C + 1))
    with pytest.raises(ValueError, match="is also a batch axis"):
        filter_response_norm(x, feature_axes=0)
    with pytest.raises(ValueError, match="scale has shape"):
        filter_response_norm(x, jnp.ones(C + 1))
    with pytest.raises(ValueError, match="epsilon must be"):
        filter_response_norm(x, epsilon=-1.0)
    with pytest.raises(ValueError, match="out of range"):
        filter_response_norm(x, feature_axes=4)

"""Tests for normjax/spectral_norm.py: Spectral Normalization."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax
from jax.test_util import check_grads

from normjax.weights.spectral_norm import SpectralNormState, spectral_norm, spectral_norm_init

KEY = jax.random.key(0)


def _w(shape, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@partial(jax.jit, static_argnames="steps")
def _train(w, state, steps: int):
    """``steps`` training calls with one power iteration each (u persists in the state)."""

    def body(state, _):
        w_sn, state = spectral_norm(w, state, train=True)
        return state, w_sn

    state, w_sns = lax.scan(body, state, None, length=steps)
    return w_sns[-1], state


@pytest.mark.parametrize("shape", [(6, 4), (3, 3, 2, 5)])
def test_sigma_converges_to_the_largest_singular_value(shape):
    w = _w(shape)
    w_sn, state = _train(w, spectral_norm_init(KEY, w), 100)
    top = np.linalg.svd(np.asarray(w, np.float64).reshape(-1, shape[-1]), compute_uv=False)[0]
    np.testing.assert_allclose(state.sigma, top, rtol=1e-4)
    np.testing.assert_allclose(w_sn, np.asarray(w, np.float64) / top, rtol=1e-4, atol=1e-6)
    svals = np.linalg.svd(np.asarray(w_sn, np.float64).reshape(-1, shape[-1]), compute_uv=False)
    np.testing.assert_allclose(svals[0], 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(state.u), 1.0, rtol=1e-5)


def test_matches_flax_spectral_norm_on_a_dense_kernel():
    x = _w((2, 6), seed=1)
    model = nn.SpectralNorm(nn.Dense(4), n_steps=1)
    variables = model.init(KEY, x, update_stats=False)
    kernel = variables["params"]["layer_instance"]["kernel"]
    bias = variables["params"]["layer_instance"]["bias"]
    stats = variables["batch_stats"]
    u0 = stats["layer_instance/kernel/u"]
    state = SpectralNormState(u=u0[0], sigma=stats["layer_instance/kernel/sigma"])
    flax_step = jax.jit(lambda stats: model.apply(
        {"params": variables["params"], "batch_stats": stats}, x, update_stats=True,
        mutable=["batch_stats"]))
    step = jax.jit(partial(spectral_norm, train=True))
    for _ in range(3):
        y, updates = flax_step(stats)
        stats = updates["batch_stats"]
        w_sn, state = step(kernel, state)
        np.testing.assert_allclose(x @ w_sn + bias[None], y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.sigma, stats["layer_instance/kernel/sigma"],
                                   rtol=1e-5)
        np.testing.assert_allclose(state.u, stats["layer_instance/kernel/u"][0], rtol=1e-5,
                                   atol=1e-6)


def test_eval_is_deterministic_and_keeps_state():
    w = _w((5, 3), seed=2)
    state = spectral_norm_init(KEY, w)
    a, s1 = spectral_norm(w, state, train=False)
    b, s2 = spectral_norm(w, state, train=False)
    np.testing.assert_array_equal(a, b)
    assert s1 is state and s2 is state
    c, _ = spectral_norm(w, state, train=True)
    np.testing.assert_array_equal(a, c)  # same iteration, only the state differs


def test_vmap_and_gradient_at_the_fixed_point():
    ws = jnp.stack([_w((5, 3), seed=3), _w((5, 3), seed=4)])
    states = jax.vmap(spectral_norm_init)(jax.random.split(KEY, 2), ws)
    _, states = jax.vmap(lambda w, s: _train(w, s, 100))(ws, states)
    for i in range(2):
        top = np.linalg.svd(np.asarray(ws[i], np.float64), compute_uv=False)[0]
        np.testing.assert_allclose(states.sigma[i], top, rtol=1e-4)
    # At convergence u and v are stationary, so finite differences see only d sigma / d W,
    # the gradient path the paper uses (u and v under stop_gradient).
    state = jax.tree.map(lambda a: a[0], states)
    f = jax.jit(lambda w: spectral_norm(w, state, n_power_iterations=20, train=False)[0])
    check_grads(jax.jit(f), (ws[0],), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_bfloat16_and_zero_kernel():
    w = _w((4, 3), seed=5)
    w_sn, _ = spectral_norm(w.astype(jnp.bfloat16), spectral_norm_init(KEY, w), train=True)
    assert w_sn.dtype == jnp.bfloat16
    z, s = spectral_norm(jnp.zeros((4, 3)), spectral_norm_init(KEY, w), train=True)
    np.testing.assert_array_equal(z, 0)
    assert np.all(np.isfinite(s.u)) and float(s.sigma) == 0


def test_errors():
    w = _w((4, 3))
    state = spectral_norm_init(KEY, w)
    with pytest.raises(ValueError, match="rank >= 2"):
        spectral_norm(jnp.ones(3), state, train=True)
    with pytest.raises(ValueError, match="rank >= 2"):
        spectral_norm_init(KEY, jnp.ones(3))
    with pytest.raises(ValueError, match=r"state.u has shape \(3,\), expected \(5,\)"):
        spectral_norm(jnp.ones((4, 5)), state, train=True)
    with pytest.raises(ValueError, match="n_power_iterations must be an int >= 1"):
        spectral_norm(w, state, n_power_iterations=0, train=True)
    with pytest.raises(TypeError, match="state must be a SpectralNormState"):
        spectral_norm(w, (state.u, state.sigma), train=True)
    with pytest.raises(TypeError, match="train must be a Python bool"):
        spectral_norm(w, state, train=None)

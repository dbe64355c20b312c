"""Tests for normjax/batch_renorm.py: Batch Renormalization."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from normjax.norms.batch_norm import batch_norm
from normjax.norms.batch_renorm import batch_renorm, renorm_clipping_schedule
from normjax.running import batch_norm_init
from tests.reference_research import batch_renorm_np, ema_np, moments_np

N, H, C = 6, 2, 4
NHWC = (0, 1, 2)


def _x(shape=(N, H, H, C), seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=shape) * rng.uniform(0.3, 3, shape[-1])
                       + rng.normal(size=shape[-1]), jnp.float32)


def _state(c: int = C):
    return batch_norm_init(c)._replace(mean=jnp.linspace(-0.5, 0.5, c),
                                       var=jnp.linspace(0.5, 2.0, c))


def _params(c: int = C):
    return jnp.linspace(0.5, 2.0, c), jnp.linspace(-1.0, 1.0, c)


def test_no_correction_is_exactly_batch_norm():
    x, state = _x(), _state()
    scale, bias = _params()
    kw = dict(scale=scale, bias=bias, reduction_axes=NHWC, train=True, decay=0.9)
    y, s = batch_renorm(x, state, r_max=1.0, d_max=0.0, **kw)
    y_ref, s_ref = batch_norm(x, state, **kw)
    np.testing.assert_array_equal(y, y_ref)
    for a, b in zip(s, s_ref, strict=True):
        np.testing.assert_array_equal(a, b)
    y, _ = batch_renorm(x, state, r_max=1.0, d_max=0.0, reduction_axes=NHWC, train=True)
    np.testing.assert_array_equal(y, batch_norm(x, state, reduction_axes=NHWC, train=True)[0])


def test_against_float64_oracle_with_partial_clipping():
    x, state = _x(seed=1), _state()
    scale, bias = _params()
    y, s = batch_renorm(x, state, scale=scale, bias=bias, reduction_axes=NHWC, train=True,
                        r_max=1.5, d_max=0.5, decay=0.9, epsilon=1e-3)
    y_ref, r, d = batch_renorm_np(x, state.mean, state.var, 1e-3, 1.5, 0.5, scale, bias, NHWC)
    assert np.any((r > 1 / 1.5) & (r < 1.5)) and np.any((r == 1.5) | (r == 1 / 1.5))
    assert np.any(np.abs(d) == 0.5) and np.any(np.abs(d) < 0.5)  # some clipped, some not
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5)
    mean, var, _ = moments_np(x, NHWC)
    np.testing.assert_allclose(s.mean, ema_np(state.mean, mean, 0.9), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.var, ema_np(state.var, var, 0.9), rtol=1e-5)


def test_unclipped_train_output_equals_eval_output():
    x, state = _x(seed=2), _state()
    scale, bias = _params()
    kw = dict(scale=scale, bias=bias, reduction_axes=NHWC)
    y_train, _ = batch_renorm(x, state, train=True, r_max=1e3, d_max=1e3, **kw)
    y_eval, s = batch_renorm(x, state, train=False, **kw)
    np.testing.assert_allclose(y_train, y_eval, rtol=1e-4, atol=1e-4)
    assert s is state


def test_r_and_d_are_constants_for_the_gradient():
    x, state = _x(shape=(N, C), seed=3), _state()
    scale, bias = _params()
    _, r, d = batch_renorm_np(x, state.mean, state.var, 1e-5, 1.5, 0.5, reduction_axes=(0,))
    r, d = jnp.asarray(r, jnp.float32), jnp.asarray(d, jnp.float32)

    def fixed(x, scale, bias):  # the paper's forward with r and d frozen
        mu, var = jnp.mean(x, 0, keepdims=True), jnp.var(x, 0, keepdims=True)
        return ((x - mu) / jnp.sqrt(var + 1e-5) * r[None] + d[None]) * scale[None] + bias[None]

    def renorm(x, scale, bias):
        return batch_renorm(x, state, scale=scale, bias=bias, reduction_axes=0, train=True,
                            r_max=1.5, d_max=0.5)[0]

    w = jnp.asarray(np.random.default_rng(4).normal(size=(N, C)), jnp.float32)
    g = jax.jit(jax.grad(lambda *a: jnp.sum(w * renorm(*a)), argnums=(0, 1, 2)))(x, scale, bias)
    g_ref = jax.jit(jax.grad(lambda *a: jnp.sum(w * fixed(*a)), argnums=(0, 1, 2)))(
        x, scale, bias)
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    check_grads(jax.jit(fixed), (x, scale, bias), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
    # With r_max = 1 and d_max = 0 the corrections are constant, so finite differences agree.
    check_grads(jax.jit(lambda x, g, b: batch_renorm(x, state, scale=g, bias=b,
                                                     reduction_axes=0, train=True, r_max=1.0,
                                                     d_max=0.0)[0]),
                (x, scale, bias), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_schedule_values_and_traced_use_in_jit():
    steps = jnp.array([0, 5000, 22500, 25000, 40000, 10**6])
    r_max, d_max = jax.vmap(renorm_clipping_schedule)(steps)
    np.testing.assert_allclose(r_max, [1, 1, 2, 2 + 1 / 7, 3, 3], rtol=1e-6)
    np.testing.assert_allclose(d_max, [0, 0, 5 * 0.875, 5, 5, 5], rtol=1e-6)

    @partial(jax.jit, static_argnames="train")
    def step(x, state, t, *, train):
        r, d = renorm_clipping_schedule(t, warmup_steps=1, r_max_steps=3, d_max_steps=2)
        return batch_renorm(x, state, reduction_axes=0, train=train, r_max=r, d_max=d)

    x, state = _x(shape=(N, C), seed=5), _state()
    y0, _ = step(x, state, jnp.asarray(0), train=True)
    np.testing.assert_allclose(y0, batch_norm(x, state, reduction_axes=0, train=True)[0],
                               rtol=1e-6, atol=1e-6)
    y_late, _ = step(x, state, jnp.asarray(10), train=True)
    y_ref, *_ = batch_renorm_np(x, state.mean, state.var, 1e-5, 3.0, 5.0)
    np.testing.assert_allclose(y_late, y_ref, rtol=1e-4, atol=1e-5)


def test_vmap_with_axis_name_equals_the_pooled_batch():
    x, state = _x(shape=(2, 3, C), seed=6), _state()
    fn = partial(batch_renorm, reduction_axes=0, train=True, r_max=1.2, d_max=0.3,
                 axis_name="dev")
    y, s = jax.vmap(fn, in_axes=(0, None), out_axes=(0, None), axis_name="dev")(x, state)
    y_ref, s_ref = batch_renorm(x.reshape(6, C), state, reduction_axes=0, train=True,
                                r_max=1.2, d_max=0.3)
    np.testing.assert_allclose(y.reshape(6, C), y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.var, s_ref.var, rtol=1e-6)


def test_errors():
    x, state = _x(shape=(N, C)), _state()
    kw = dict(reduction_axes=0, train=True)
    with pytest.raises(ValueError, match="r_max must be >= 1"):
        batch_renorm(x, state, r_max=0.5, **kw)
    with pytest.raises(ValueError, match="d_max must be >= 0"):
        batch_renorm(x, state, d_max=-1.0, **kw)
    with pytest.raises(ValueError, match="warmup_steps < r_max_steps"):
        renorm_clipping_schedule(0, warmup_steps=10, r_max_steps=5)
    with pytest.raises(ValueError, match="scale has shape"):
        batch_renorm(x, state, scale=jnp.ones(C + 1), **kw)
    with pytest.raises(ValueError, match="state.mean has shape"):
        batch_renorm(x, batch_norm_init(C + 1), **kw)
    with pytest.raises(TypeError, match="train must be a Python bool"):
        batch_renorm(x, state, reduction_axes=0, train=None)
    with pytest.raises(ValueError, match="epsilon must be"):
        batch_renorm(x, state, epsilon=-1.0, **kw)

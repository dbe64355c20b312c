"""The guarded one-pass variance: one-pass where accurate, two-pass otherwise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import normjax as nj
from normjax import _platform
from normjax._numerics import GUARD_RATIO, guarded_variance


def _x(shape, offset=0.0, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.normal(size=shape)).astype(np.float32)


def _var64(x, axes):
    return np.var(np.asarray(x, np.float64), axis=axes)


@pytest.mark.parametrize("offset", [0.0, 2.0, 3.9])
def test_one_pass_region_is_accurate(offset):
    """|mean| < sqrt(GUARD_RATIO) std: the one-pass form, relative error within ~20 ulps."""
    x = _x((512, 8), offset)
    var = nj.moments(x, 0).var
    np.testing.assert_allclose(var, _var64(x, 0), rtol=20 * 2**-23)


@pytest.mark.parametrize("offset", [5.0, 3000.0])
def test_two_pass_beyond_the_guard(offset):
    x = _x((512, 8), offset)
    guarded, exact = nj.moments(x, 0).var, nj.moments(x, 0, guard=False).var
    np.testing.assert_allclose(guarded, exact, rtol=4 * 2**-23)  # an ulp or two on a GPU
    np.testing.assert_allclose(guarded, _var64(x, 0), rtol=1e-5)
    assert nj.moments(x, 0, fast_variance=True).var.shape == (8,)


def test_one_bad_feature_sends_the_call_to_two_passes():
    x = _x((256, 4))
    x[:, 2] += 3000.0
    # the same two-pass formula (to an ulp or two: a GPU may fuse the two calls' reductions
    # differently); the one-pass formula would be wrong in its leading digits here
    np.testing.assert_allclose(nj.moments(x, 0).var, nj.moments(x, 0, guard=False).var,
                               rtol=4 * 2**-23)
    np.testing.assert_allclose(nj.moments(x, 0).var, _var64(x, 0), rtol=1e-5)


def test_guard_threshold_is_the_documented_ratio():
    sentinel = jnp.full((2,), -7.0)
    for ratio, bad in ((GUARD_RATIO * 0.99, False), (GUARD_RATIO * 1.01, True)):
        mean, one_pass = jnp.array([1.0, 0.0]), jnp.array([1.0 / ratio, 1.0])
        var, took_two_pass = guarded_variance(mean, one_pass, lambda: sentinel)
        assert bool(took_two_pass) is bad
        np.testing.assert_array_equal(var, sentinel if bad else one_pass)
    # a one-pass value below zero (cancellation) always takes the two-pass form
    var, bad = guarded_variance(jnp.zeros(1), jnp.array([-1e-9]), lambda: sentinel[:1])
    assert bool(bad) and float(var[0]) == -7.0


def test_vmap_keeps_a_branch_and_each_member_is_accurate(monkeypatch):
    x = np.stack([_x((128, 4)), _x((128, 4), 3000.0, seed=1)])
    # the guard is the CPU formulation (off the CPU moments takes the shifted one-pass form)
    with monkeypatch.context() as m:
        m.setattr(_platform, "cpu_target", lambda: True)
        jaxpr = str(jax.make_jaxpr(jax.vmap(lambda a: nj.moments(a, 0).var))(x))
    assert "cond[" in jaxpr
    var = jax.jit(jax.vmap(lambda a: nj.moments(a, 0).var))(x)
    np.testing.assert_allclose(var, _var64(x, 1), rtol=1e-5)


def test_fused_batch_norm_mean_3000_normalizes_to_unit_std():
    x = _x((64, 4, 4, 8), 3000.0)
    y, _ = jax.jit(lambda a: nj.batch_norm(a, nj.batch_norm_init(8), reduction_axes=(0, 1, 2),
                                           train=True, epsilon=0.0))(x)
    np.testing.assert_allclose(np.std(np.asarray(y, np.float64), axis=(0, 1, 2)), 1.0,
                               atol=1e-3)


@pytest.mark.parametrize("offset", [0.5, 3000.0])
def test_gradients_match_the_two_pass_autodiff(offset):
    x = jnp.asarray(_x((32, 6), offset))
    ct = jnp.asarray(_x((32, 6), seed=3))

    def loss(x, guard):
        m = nj.moments(x, 0, guard=guard, keepdims=True)
        return jnp.sum(((x - m.mean) * jax.lax.rsqrt(m.var + 1e-5)) * ct)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g = grad(x, True)
    np.testing.assert_allclose(g, grad(x, False), rtol=2e-3, atol=2e-4)
    h = jax.jit(jax.hessian(lambda v: loss(x.at[:3, 0].set(v), True)))(x[:3, 0])
    assert h.shape == (3, 3) and np.all(np.isfinite(h))


@pytest.mark.parametrize("offset", [0.5, 3000.0])
def test_forward_mode_tangent_is_accurate_on_both_sides_of_the_guard(offset):
    """``jax.jvp`` of a norm takes the guard once around its whole output (one-pass moments
    and tangents, or the two-pass program): both sides agree with a float64 oracle, where the
    one-pass tangent ``2 (E[x x'] - mean E[x'])`` alone would lose every digit at mean 3000."""
    x, t = _x((4, 64, 8), offset), _x((4, 64, 8), seed=1)
    y, y_dot = jax.jit(lambda a, da: jax.jvp(
        lambda b: nj.instance_norm(b, epsilon=1e-3), (a,), (da,)))(x, t)
    x64, t64 = np.asarray(x, np.float64), np.asarray(t, np.float64)
    dev = x64 - x64.mean(1, keepdims=True)
    r = 1 / np.sqrt((dev**2).mean(1, keepdims=True) + 1e-3)
    want_dot = r * (t64 - t64.mean(1, keepdims=True)) - dev * r**3 * (dev * t64).mean(
        1, keepdims=True)
    tol = 1e-5 if offset < 1 else 2e-3  # float32 x near 3000 is only good to ~2e-4
    np.testing.assert_allclose(y, dev * r, atol=tol)
    np.testing.assert_allclose(y_dot, want_dot, atol=tol)

"""Tests for weight_norm / weight_norm_init: formula, flax.linen.WeightNorm, v = 0, errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import normjax as nj
from tests import reference as ref

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _data(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize(
    ("shape", "feature_axes"), [((3, 5), -1), ((3, 3, 4, 5), -1), ((4, 6), 0), ((2, 3, 4), (0, 2))]
)
def test_matches_reference(shape, feature_axes, use_jit):
    v = _data(shape)
    feat = tuple(shape[a] for a in np.atleast_1d(feature_axes))
    g = _data(feat, seed=1)
    f = lambda v, g: nj.weight_norm(v, g, feature_axes=feature_axes)  # noqa: E731
    w = (jax.jit(f) if use_jit else f)(v, g)
    np.testing.assert_allclose(w, ref.weight_norm(v, g, feature_axes=feature_axes), **TOL)
    unit = nj.weight_norm(v, feature_axes=feature_axes)
    np.testing.assert_allclose(unit, ref.weight_norm(v, feature_axes=feature_axes), **TOL)


def test_column_norms_equal_g():
    v, g = _data((3, 3, 4, 5)), jnp.asarray([0.5, 1.0, 2.0, 3.0, 4.0])
    w = np.asarray(nj.weight_norm(v, g), np.float64)
    np.testing.assert_allclose(np.sqrt((w**2).sum((0, 1, 2))), g, rtol=1e-5)


def test_init_splits_w_into_v_and_g():
    for shape, feature_axes in (((3, 5), -1), ((3, 3, 4, 5), -1), ((4, 6), 0)):
        w = _data(shape)
        v, g = nj.weight_norm_init(w, feature_axes=feature_axes)
        assert g.shape == tuple(shape[a] for a in np.atleast_1d(feature_axes))
        np.testing.assert_allclose(nj.weight_norm(v, g, feature_axes=feature_axes), w, **TOL)


def test_safe_at_zero_norm():
    v = _data((4, 3)).at[:, 1].set(0.0)
    g = jnp.asarray([1.0, 2.0, 3.0])
    w = nj.weight_norm(v, g)
    assert np.all(np.isfinite(w))
    np.testing.assert_array_equal(w[:, 1], 0.0)
    grads = jax.grad(lambda v, g: jnp.sum(nj.weight_norm(v, g) ** 2 + nj.weight_norm(v, g)),
                     argnums=(0, 1))(v, g)
    for grad in grads:
        assert np.all(np.isfinite(grad))


def test_matches_flax_weight_norm_on_a_dense_kernel():
    x = _data((4, 3), seed=2)
    module = nn.WeightNorm(nn.Dense(5))
    variables = module.init(jax.random.key(0), x)
    params = variables["params"]
    scale = _data((5,), seed=3) + 2.0
    params = {**params, "layer_instance/kernel/scale": scale}
    flax_y = module.apply({"params": params}, x)
    kernel, bias = params["layer_instance"]["kernel"], params["layer_instance"]["bias"]
    y = x @ nj.weight_norm(kernel, scale) + bias[None]
    np.testing.assert_allclose(y, flax_y, **TOL)


def test_keeps_dtype():
    v = _data((3, 5)).astype(jnp.bfloat16)
    w = nj.weight_norm(v, jnp.ones(5, jnp.bfloat16))
    assert w.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(w, np.float64), ref.weight_norm(v, np.ones(5)),
                               atol=1e-2)
    assert nj.weight_norm_init(v)[1].dtype == jnp.bfloat16


def test_check_grads():
    with jax.enable_x64(True):
        v = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))
        g = jnp.asarray([0.5, 1.0, -1.5, 2.0])
        check_grads(jax.jit(nj.weight_norm), (v, g), order=2, modes=["rev"])


# ----------------------------------------------------------------------------- errors


def test_g_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"g has shape \(3,\), expected \(5,\)"):
        nj.weight_norm(jnp.ones((3, 5)), jnp.ones(3))


@pytest.mark.parametrize("epsilon", [-1e-12, float("nan")])
def test_bad_epsilon_raises(epsilon):
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0"):
        nj.weight_norm(jnp.ones((3, 5)), epsilon=epsilon)


def test_bad_axes_raise():
    with pytest.raises(ValueError, match=r"feature_axes=\(1, -3\) names the same axis"):
        nj.weight_norm(jnp.ones((2, 3, 4, 5)), feature_axes=(1, -3))
    with pytest.raises(ValueError, match=r"feature_axes=2 contains axis 2, which is out of range"):
        nj.weight_norm_init(jnp.ones((3, 5)), feature_axes=2)

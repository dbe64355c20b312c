"""Tests for rms_norm: float64 oracle, flax.linen.RMSNorm, gradients, errors."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import normjax as nj
from tests import reference as ref
from tests.norm_inputs import TOL, data, feature_shape, keep_mask, scale_bias

# (shape, reduction_axes, feature_axes)
LAYOUTS = {
    "tokens": ((3, 4, 6), -1, -1),
    "nhwc": ((2, 3, 3, 4), (1, 2, 3), -1),
    "nchw": ((2, 4, 3, 3), (1, 2, 3), 1),
}


def _scale(shape: tuple[int, ...], feature_axes) -> jax.Array:
    return scale_bias(feature_shape(shape, feature_axes))[0]


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference_and_flax(layout, masked, use_jit):
    shape, red, feat = LAYOUTS[layout]
    x = data(shape)
    mask = keep_mask(shape, 3) if masked else None
    scale = _scale(shape, feat)
    f = functools.partial(nj.rms_norm, reduction_axes=red, feature_axes=feat)
    y = (jax.jit(f) if use_jit else f)(x, scale, mask=mask)
    want = ref.rms_norm(x, reduction_axes=red, feature_axes=feat, scale=scale, mask=mask)
    np.testing.assert_allclose(y, want, **TOL)
    module = nn.RMSNorm(reduction_axes=red, feature_axes=feat)
    flax_y = module.apply({"params": {"scale": scale}}, x, mask=mask)
    np.testing.assert_allclose(y, flax_y, **TOL)


def test_is_not_recentered():
    x = data((4, 8)) + 10.0
    y = np.asarray(nj.rms_norm(x))
    np.testing.assert_allclose(np.mean(y**2, -1), 1.0, rtol=1e-4)
    assert np.all(np.mean(y, -1) > 0.9)  # the mean is kept, unlike layer_norm


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_keeps_dtype(dtype):
    x = data((3, 8)).astype(dtype)
    y = nj.rms_norm(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float64), ref.rms_norm(x), atol=2e-2)
    module = nn.RMSNorm(dtype=dtype)
    with jax.numpy_dtype_promotion("standard"):
        flax_y = module.apply({"params": {"scale": jnp.ones(8)}}, x)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(flax_y, np.float32),
                               atol=1e-2)


def test_float64_stays_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8)))
        y = nj.rms_norm(x)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, ref.rms_norm(np.asarray(x)), rtol=1e-12)


def test_check_grads():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)))
        scale = jnp.linspace(0.5, 1.5, 4)
        f = lambda x, s: nj.rms_norm(x, s, reduction_axes=(1, 2))  # noqa: E731
        check_grads(jax.jit(f), (x, scale), order=2, modes=["rev"])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["reduction_axes", "feature_axes"])
def test_bad_axes_raise(name):
    x = jnp.ones((2, 3, 4, 5))
    kw = {"reduction_axes": (1, 2, 3), "feature_axes": -1}
    with pytest.raises(ValueError, match=rf"{name}=\(1, -3\) names the same axis more than once"):
        nj.rms_norm(x, **{**kw, name: (1, -3)})
    with pytest.raises(ValueError, match=rf"{name}=-5 contains axis -5, which is out of range"):
        nj.rms_norm(x, **{**kw, name: -5})


def test_scale_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"scale has shape \(4,\), expected \(6,\)"):
        nj.rms_norm(data((2, 6)), jnp.ones(4))


def test_negative_epsilon_raises():
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0"):
        nj.rms_norm(data((2, 6)), epsilon=-1e-6)


def test_mask_not_broadcastable_raises():
    with pytest.raises(ValueError, match=r"mask of shape \(2, 5\) does not broadcast"):
        nj.rms_norm(data((2, 6)), mask=jnp.ones((2, 5), bool))

"""Tests for layer_norm: float64 oracle, flax.linen.LayerNorm, GroupNorm(1 group), gradients."""

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


def _params(shape: tuple[int, ...], feature_axes) -> tuple[jax.Array, jax.Array]:
    return scale_bias(feature_shape(shape, feature_axes))


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference_and_flax(layout, masked, use_jit):
    shape, red, feat = LAYOUTS[layout]
    x = data(shape)
    mask = keep_mask(shape, 3) if masked else None
    scale, bias = _params(shape, feat)
    f = functools.partial(nj.layer_norm, reduction_axes=red, feature_axes=feat)
    y = (jax.jit(f) if use_jit else f)(x, scale, bias, mask=mask)
    want = ref.layer_norm(x, reduction_axes=red, feature_axes=feat, scale=scale, bias=bias,
                          mask=mask)
    np.testing.assert_allclose(y, want, **TOL)
    module = nn.LayerNorm(reduction_axes=red, feature_axes=feat, use_fast_variance=False)
    flax_y = module.apply({"params": {"scale": scale, "bias": bias}}, x, mask=mask)
    np.testing.assert_allclose(y, flax_y, **TOL)


@pytest.mark.parametrize(("shape", "channel_axis"), [((2, 3, 3, 4), -1), ((2, 4, 3, 3), 1)])
def test_equals_group_norm_with_one_group(shape, channel_axis):
    x = data(shape)
    scale, bias = _params(shape, channel_axis)
    ln = nj.layer_norm(x, scale, bias, reduction_axes=(1, 2, 3), feature_axes=channel_axis)
    gn = nj.group_norm(x, scale, bias, num_groups=1, feature_axes=channel_axis)
    np.testing.assert_allclose(ln, gn, **TOL)


def test_statistics_do_not_depend_on_the_batch():
    x = data((5, 6))
    np.testing.assert_allclose(nj.layer_norm(x)[:2], nj.layer_norm(x[:2]), **TOL)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_keeps_dtype_and_matches_flax(dtype):
    x = data((3, 8)).astype(dtype)
    y = nj.layer_norm(x)
    assert y.dtype == dtype
    module = nn.LayerNorm(use_fast_variance=False, dtype=dtype)
    with jax.numpy_dtype_promotion("standard"):
        flax_y = module.apply({"params": {"scale": jnp.ones(8), "bias": jnp.zeros(8)}}, x)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(flax_y, np.float32),
                               atol=1e-2)
    np.testing.assert_allclose(np.asarray(y, np.float64), ref.layer_norm(x), atol=2e-2)


def test_float64_stays_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8)))
        y = nj.layer_norm(x)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, ref.layer_norm(np.asarray(x)), rtol=1e-12, atol=1e-12)


def test_check_grads():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)))
        scale, bias = jnp.linspace(0.5, 1.5, 4), jnp.linspace(-1.0, 1.0, 4)
        mask = jnp.asarray(keep_mask((2, 3, 4), 3))
        f = lambda x, s, b: nj.layer_norm(x, s, b, reduction_axes=(1, 2), mask=mask)  # noqa: E731
        check_grads(jax.jit(f), (x, scale, bias), order=2, modes=["rev"])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["reduction_axes", "feature_axes"])
def test_bad_axes_raise(name):
    x = jnp.ones((2, 3, 4, 5))
    kw = {"reduction_axes": (1, 2, 3), "feature_axes": -1}
    with pytest.raises(ValueError, match=rf"{name}=\(1, -3\) names the same axis more than once"):
        nj.layer_norm(x, **{**kw, name: (1, -3)})
    with pytest.raises(ValueError, match=rf"{name}=4 contains axis 4, which is out of range"):
        nj.layer_norm(x, **{**kw, name: 4})


@pytest.mark.parametrize("name", ["scale", "bias"])
def test_param_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match=rf"{name} has shape \(4,\), expected \(6,\)"):
        nj.layer_norm(data((2, 6)), **{name: jnp.ones(4)})


def test_negative_epsilon_raises():
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0, got -0.1"):
        nj.layer_norm(data((2, 6)), epsilon=-0.1)


def test_mask_not_broadcastable_raises():
    with pytest.raises(ValueError, match=r"mask of shape \(3, 1\) does not broadcast"):
        nj.layer_norm(data((2, 6)), mask=jnp.ones((3, 1), bool))

"""Tests for instance_norm: float64 oracle, flax.linen.InstanceNorm, GroupNorm(group size 1)."""

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
from tests.norm_inputs import TOL, data, keep_mask, scale_bias

# (shape, channel axis)
LAYOUTS = {"nhwc": ((2, 3, 4, 5), -1), "nchw": ((2, 5, 3, 4), 1), "nlc": ((2, 6, 3), -1)}


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference_and_flax(layout, masked, use_jit):
    shape, c = LAYOUTS[layout]
    x = data(shape)
    mask = keep_mask(shape, 7) if masked else None
    scale, bias = scale_bias(shape[c])
    f = functools.partial(nj.instance_norm, feature_axes=c)
    y = (jax.jit(f) if use_jit else f)(x, scale, bias, mask=mask)
    want = ref.instance_norm(x, channel_axis=c, scale=scale, bias=bias, mask=mask)
    np.testing.assert_allclose(y, want, **TOL)
    module = nn.InstanceNorm(feature_axes=c, use_fast_variance=False)
    flax_y = module.apply({"params": {"scale": scale, "bias": bias}}, x, mask=mask)
    np.testing.assert_allclose(y, flax_y, **TOL)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_equals_group_norm_with_group_size_one(layout):
    shape, c = LAYOUTS[layout]
    x = data(shape)
    scale, bias = scale_bias(shape[c])
    inorm = nj.instance_norm(x, scale, bias, feature_axes=c)
    gn = nj.group_norm(x, scale, bias, group_size=1, feature_axes=c)
    np.testing.assert_allclose(inorm, gn, **TOL)


def test_per_example_under_vmap_equals_batched():
    x = data((3, 4, 4, 2))
    per_example = jax.vmap(functools.partial(nj.instance_norm, batch_axes=()))
    np.testing.assert_allclose(per_example(x), nj.instance_norm(x), **TOL)


def test_low_precision_keeps_dtype():
    x = data((2, 3, 3, 4)).astype(jnp.bfloat16)
    y = nj.instance_norm(x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float64), ref.instance_norm(x), atol=2e-2)


def test_check_grads():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 2)))
        scale, bias = jnp.asarray([0.5, 1.5]), jnp.asarray([-1.0, 1.0])
        check_grads(jax.jit(nj.instance_norm), (x, scale, bias), order=2, modes=["rev"])


# ----------------------------------------------------------------------------- errors


def test_feature_and_batch_axes_overlap_raises():
    with pytest.raises(ValueError, match=r"feature_axes=0 and batch_axes=0 overlap"):
        nj.instance_norm(jnp.ones((2, 3, 4)), feature_axes=0)


def test_bad_axes_raise():
    x = jnp.ones((2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"feature_axes=\(1, -3\) names the same axis"):
        nj.instance_norm(x, feature_axes=(1, -3))
    with pytest.raises(ValueError, match=r"batch_axes=4 contains axis 4, which is out of range"):
        nj.instance_norm(x, batch_axes=4)


def test_no_spatial_axes_returns_the_bias_as_flax_does():
    """Nothing left to reduce: each element is its own group, normalized to 0 (flax)."""
    x, bias = data((4, 3)), jnp.asarray([0.5, -1.0, 2.0])
    np.testing.assert_array_equal(nj.instance_norm(x, bias=bias), np.broadcast_to(bias, (4, 3)))
    grad = jax.grad(lambda a: jnp.sum(nj.instance_norm(a, bias=bias) * a))(x)
    np.testing.assert_array_equal(grad, np.broadcast_to(bias, (4, 3)))


@pytest.mark.parametrize("name", ["scale", "bias"])
def test_param_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match=rf"{name} has shape \(3,\), expected \(5,\)"):
        nj.instance_norm(data((2, 3, 5)), **{name: jnp.ones(3)})


def test_negative_epsilon_raises():
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0"):
        nj.instance_norm(data((2, 3, 5)), epsilon=-1.0)


def test_mask_not_broadcastable_raises():
    with pytest.raises(ValueError, match=r"mask of shape \(4, 1, 1\) does not broadcast"):
        nj.instance_norm(data((2, 3, 5)), mask=jnp.ones((4, 1, 1), bool))

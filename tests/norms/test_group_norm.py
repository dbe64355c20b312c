"""Tests for group_norm: float64 oracle, flax.linen.GroupNorm, gradients and errors."""

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

# (shape, channel axis, groups)
LAYOUTS = {"nhwc": ((2, 3, 3, 6), -1, 3), "nchw": ((2, 6, 3, 3), 1, 3), "nlc": ((2, 5, 4), -1, 2)}


def _flax_group_norm(x, scale, bias, *, groups, channel_axis, mask=None):
    """flax's GroupNorm is channels-last only: move the channels there and back."""
    last = lambda a: None if a is None else jnp.moveaxis(jnp.asarray(a), channel_axis, -1)  # noqa: E731
    module = nn.GroupNorm(num_groups=groups, use_fast_variance=False)
    y = module.apply({"params": {"scale": scale, "bias": bias}}, last(x), mask=last(mask))
    return jnp.moveaxis(y, -1, channel_axis)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference_and_flax(layout, masked, use_jit):
    shape, c, groups = LAYOUTS[layout]
    x = data(shape)
    mask = keep_mask(shape, 7) if masked else None
    scale, bias = scale_bias(shape[c])
    f = functools.partial(nj.group_norm, num_groups=groups, feature_axes=c)
    y = (jax.jit(f) if use_jit else f)(x, scale, bias, mask=mask)
    want = ref.group_norm(x, groups, channel_axis=c, scale=scale, bias=bias, mask=mask)
    np.testing.assert_allclose(y, want, **TOL)
    flax_y = _flax_group_norm(x, scale, bias, groups=groups, channel_axis=c, mask=mask)
    np.testing.assert_allclose(y, flax_y, **TOL)


def test_group_size_equals_num_groups():
    x = data((2, 3, 3, 6))
    np.testing.assert_array_equal(nj.group_norm(x, group_size=2), nj.group_norm(x, num_groups=3))


def test_per_example_under_vmap_equals_batched():
    x = data((3, 4, 4, 4))
    per_example = jax.vmap(functools.partial(nj.group_norm, num_groups=2, batch_axes=()))
    np.testing.assert_allclose(per_example(x), nj.group_norm(x, num_groups=2), **TOL)


def test_low_precision_keeps_dtype():
    x = data((2, 3, 3, 4)).astype(jnp.bfloat16)
    y = nj.group_norm(x, num_groups=2)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float64), ref.group_norm(x, 2), atol=2e-2)
    with jax.numpy_dtype_promotion("standard"):
        flax_y = nn.GroupNorm(num_groups=2, use_fast_variance=False, dtype=jnp.bfloat16).apply(
            {"params": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}, x)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(flax_y, np.float32),
                               atol=2e-2)


def test_check_grads():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 2, 2)))  # NCHW
        scale, bias = jnp.linspace(0.5, 1.5, 4), jnp.linspace(-1.0, 1.0, 4)
        f = lambda x, s, b: nj.group_norm(x, s, b, num_groups=2, feature_axes=1)  # noqa: E731
        check_grads(jax.jit(f), (x, scale, bias), order=2, modes=["rev"])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_groups": 4}, r"Number of groups \(4\) does not divide the number of channels "
         r"\(6\)\. Pick a positive divisor of 6"),
        ({"group_size": 4}, r"Number of channels \(6\) is not multiple of the group size \(4\)"),
        ({"num_groups": 0}, r"Number of groups \(0\) does not divide the number of channels"),
        ({}, r"Either `num_groups` or `group_size` should be specified"),
        ({"num_groups": 2, "group_size": 3}, r"Either `num_groups` or `group_size` should be"),
    ],
)
def test_bad_groups_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nj.group_norm(jnp.ones((2, 3, 6)), **kwargs)


def test_group_counts_must_be_ints():
    with pytest.raises(TypeError, match=r"num_groups must be an int, got 2.0"):
        nj.group_norm(jnp.ones((2, 3, 6)), num_groups=2.0)
    with pytest.raises(TypeError, match=r"group_size must be an int, got True"):
        nj.group_norm(jnp.ones((2, 3, 6)), group_size=True)
    x = data((2, 3, 6))
    np.testing.assert_array_equal(nj.group_norm(x, num_groups=np.int64(2)),
                                  nj.group_norm(x, num_groups=2))


def test_bad_axes_raise():
    with pytest.raises(ValueError, match=r"feature_axes=0 is also a batch axis"):
        nj.group_norm(jnp.ones((2, 3, 6)), num_groups=1, feature_axes=0)
    with pytest.raises(ValueError, match=r"feature_axes=3 contains axis 3, which is out of range"):
        nj.group_norm(jnp.ones((2, 3, 6)), num_groups=1, feature_axes=3)
    with pytest.raises(ValueError, match=r"batch_axes=\(1, -2\) names the same axis"):
        nj.group_norm(jnp.ones((2, 3, 6)), num_groups=1, batch_axes=(1, -2))


@pytest.mark.parametrize("name", ["scale", "bias"])
def test_param_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match=rf"{name} has shape \(3,\), expected \(6,\)"):
        nj.group_norm(data((2, 3, 6)), num_groups=2, **{name: jnp.ones(3)})


def test_negative_epsilon_raises():
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0"):
        nj.group_norm(data((2, 3, 6)), num_groups=2, epsilon=-1.0)


def test_mask_not_broadcastable_raises():
    with pytest.raises(ValueError, match=r"mask of shape \(3, 1, 1\) does not broadcast to the "
                                         r"input shape \(2, 3, 6\)"):
        nj.group_norm(data((2, 3, 6)), num_groups=2, mask=jnp.ones((3, 1, 1), bool))

"""Tests for the shared statistics core: moments, standardize and the axis helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import normjax as nj
from normjax._checks import canonicalize_axes
from normjax._numerics import stats_dtype
from tests import reference as ref

# (shape, reduction_axes, feature_axes): MLP, NHWC, NCHW, per-token (layer-norm style).
LAYOUTS = [
    ((6, 4), (0,), (1,)),
    ((3, 4, 5, 6), (0, 1, 2), (3,)),
    ((3, 6, 4, 5), (0, 2, 3), (1,)),
    ((3, 4, 6), (-1,), (0, 1)),
]
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _data(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 2 + 1).astype(np.float32)


def _mask(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    mask = np.random.default_rng(seed).random(shape) < 0.7
    mask.flat[0] = True
    return mask


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("shape", "axes", "_feat"), LAYOUTS)
def test_moments_match_reference(shape, axes, _feat, masked, use_jit):
    x = _data(shape)
    mask = _mask(shape) if masked else None
    f = lambda x, m: nj.moments(x, axes, mask=m)  # noqa: E731
    got = (jax.jit(f) if use_jit else f)(x, mask)
    want = ref.moments(x, axes, mask)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(g, w, **TOL)


def test_moments_keepdims_and_uncentered():
    x = _data((3, 4, 5))
    got = nj.moments(x, (0, 2), keepdims=True)
    assert got.mean.shape == got.var.shape == got.count.shape == (1, 4, 1)
    np.testing.assert_allclose(got.var, ref.moments(x, (0, 2), keepdims=True)[1], **TOL)
    raw = nj.moments(x, (0, 2), center=False)
    np.testing.assert_array_equal(raw.mean, np.zeros(4))
    np.testing.assert_allclose(raw.var, (x.astype(np.float64) ** 2).mean((0, 2)), **TOL)


def test_fast_variance_agrees_on_centered_data():
    x = _data((64, 5))
    slow, fast = nj.moments(x, 0), nj.moments(x, 0, fast_variance=True)
    np.testing.assert_allclose(fast.mean, slow.mean, **TOL)
    np.testing.assert_allclose(fast.var, slow.var, rtol=1e-4)


def test_mask_count_is_exact_and_only_masked_in_elements_count():
    x = _data((7, 3))
    mask = np.zeros((7, 3), bool)
    mask[:5, 0] = mask[:2, 1] = True  # counts 5, 2, 0
    got = nj.moments(x, 0, mask=mask)
    np.testing.assert_array_equal(got.count, [5.0, 2.0, 0.0])
    np.testing.assert_allclose(got.mean[:2], [x[:5, 0].mean(), x[:2, 1].mean()], **TOL)
    np.testing.assert_allclose(got.var[:2], [x[:5, 0].var(), x[:2, 1].var()], **TOL)
    # A feature with no masked-in element gets mean 0, var 0 (not NaN).
    np.testing.assert_array_equal([got.mean[2], got.var[2]], [0.0, 0.0])


def test_row_mask_broadcasts():
    x = _data((6, 2, 3))
    rows = np.array([1, 1, 0, 1, 0, 1], bool)[:, None, None]
    got = nj.moments(x, (0, 1), mask=rows)
    np.testing.assert_array_equal(got.count, np.full(3, 8.0))
    np.testing.assert_allclose(got.mean, x[rows[:, 0, 0]].mean((0, 1)), **TOL)


def test_nan_padding_does_not_leak_into_statistics_or_gradients():
    valid = _data((5, 3))
    padded = np.concatenate([valid, np.full((3, 3), np.nan, np.float32)])
    mask = np.arange(8)[:, None] < 5
    got = nj.moments(padded, 0, mask=mask)
    want = nj.moments(valid, 0)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **TOL)

    def loss(x, mask):
        m = nj.moments(x, 0, mask=mask)
        return jnp.sum(m.mean) + jnp.sum(m.var)

    grad = jax.grad(loss)(padded, mask)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[5:], 0.0)
    np.testing.assert_allclose(grad[:5], jax.grad(loss)(valid, None), **TOL)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_statistics_in_float32_and_output_keeps_dtype(dtype):
    x = jnp.asarray(_data((8, 3)), dtype)
    stats = nj.moments(x, 0)
    assert stats.mean.dtype == stats.var.dtype == stats.count.dtype == jnp.float32
    assert stats_dtype(dtype) == np.float32
    y = nj.standardize(x, stats.mean, stats.var, epsilon=1e-5, feature_axes=1)
    assert y.dtype == dtype
    want = ref.moments(np.asarray(x, np.float64), 0)
    np.testing.assert_allclose(stats.var, want[1], rtol=1e-6)
    assert nj.standardize(x, stats.mean, stats.var, epsilon=1e-5, dtype=jnp.float32).dtype == (
        jnp.float32
    )


def test_float16_accumulation_does_not_overflow():
    # 4096 * 100 = 409600 exceeds the float16 maximum (65504): a float16 sum would be inf.
    x = jnp.full((4096, 1), 100.0, jnp.float16)
    stats = nj.moments(x, 0)
    np.testing.assert_allclose(stats.mean, [100.0])
    np.testing.assert_allclose(stats.var, [0.0])


def test_float64_stays_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(_data((8, 3)), jnp.float64) + 1e-12
        stats = nj.moments(x, 0)
        assert stats.mean.dtype == stats.var.dtype == jnp.float64
        y = nj.standardize(x, stats.mean, stats.var, epsilon=0.0)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(stats.var, ref.moments(np.asarray(x), 0)[1], rtol=1e-13)


def _normalized_std(x: jax.Array, fast: bool) -> np.ndarray:
    stats = nj.moments(x, 0, fast_variance=fast)
    y = nj.standardize(x, stats.mean, stats.var, epsilon=1e-5)
    return np.asarray(y, np.float64).std(0)


def test_stable_variance_float32_mean_3000():
    rng = np.random.default_rng(0)
    x = jnp.asarray(3000 + rng.normal(size=(1024, 4)), jnp.float32)
    two_pass = _normalized_std(x, fast=False)
    np.testing.assert_allclose(two_pass, 1.0, atol=1e-3)
    # The one-pass E[x^2] - E[x]^2 cancels catastrophically (E[x^2] ~ 9e6 in float32).
    one_pass = _normalized_std(x, fast=True)
    assert np.max(np.abs(one_pass - 1)) > 0.1


def test_stable_variance_bfloat16():
    # bfloat16 has 8 significant bits: around 3000 its spacing is 16, so std 1 cannot be
    # represented; std 16 is the smallest spread the data can carry at this mean.
    rng = np.random.default_rng(0)
    x = jnp.asarray(3000 + 16 * rng.normal(size=(1024, 4)), jnp.bfloat16)
    np.testing.assert_allclose(_normalized_std(x, fast=False), 1.0, atol=1e-2)
    exact = np.asarray(x, np.float64).var(0)
    err_two_pass = np.max(np.abs(nj.moments(x, 0).var - exact) / exact)
    err_one_pass = np.max(np.abs(nj.moments(x, 0, fast_variance=True).var - exact) / exact)
    assert err_two_pass < 1e-5
    assert err_one_pass > 10 * err_two_pass


@pytest.mark.parametrize("use_jit", [False, True])
def test_standardize_matches_reference(use_jit):
    x = _data((3, 4, 2, 5))  # NCHW, features on axis 1
    rng = np.random.default_rng(3)
    mean, var = rng.normal(size=4), rng.random(4) + 0.5
    scale, bias = rng.normal(size=4), rng.normal(size=4)

    def f(x, mean, var, scale, bias):
        return nj.standardize(x, mean, var, epsilon=1e-3, scale=scale, bias=bias,
                              feature_axes=1)

    got = (jax.jit(f) if use_jit else f)(x, *(jnp.asarray(a, jnp.float32)
                                              for a in (mean, var, scale, bias)))
    want = ref.standardize(x, mean.reshape(1, 4, 1, 1), var.reshape(1, 4, 1, 1),
                           epsilon=1e-3, scale=scale, bias=bias, feature_axes=1)
    np.testing.assert_allclose(got, want, **TOL)


def test_check_grads():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)))
        mask = jnp.asarray(_mask((5, 3)))

        def f(x):
            stats = nj.moments(x, 0, mask=mask)
            return nj.standardize(x, stats.mean, stats.var, epsilon=1e-3)

        check_grads(jax.jit(f), (x,), order=2, modes=["rev"])
        check_grads(jax.jit(lambda x: nj.moments(x, (0, 1), fast_variance=True).var), (x,),
                    order=2, modes=["rev"])


def test_standardize_accepts_keepdims_statistics():
    x = _data((3, 4, 5))
    stats = nj.moments(x, (1, 2), keepdims=True)
    y = nj.standardize(x, stats.mean, stats.var, epsilon=1e-6, feature_axes=-1)
    want = ref.layer_norm(x, reduction_axes=(1, 2), epsilon=1e-6)
    np.testing.assert_allclose(y, want, **TOL)


# ----------------------------------------------------------------------------- errors


def test_canonicalize_axes():
    assert canonicalize_axes((-1, 0), 4) == (0, 3)
    assert canonicalize_axes(np.int64(2), 3) == (2,)
    assert canonicalize_axes((), 3) == ()


@pytest.mark.parametrize(
    ("axes", "match"),
    [
        ((1, -3), r"names the same axis more than once .*rank 4"),
        ((0, 4), r"axis 4, which is out of range for an input of rank 4 \(valid axes: -4..3\)"),
        (-5, r"axis -5, which is out of range"),
    ],
)
def test_bad_axes_raise(axes, match):
    with pytest.raises(ValueError, match=match):
        canonicalize_axes(axes, 4)
    with pytest.raises(ValueError, match=match):
        nj.moments(jnp.ones((2, 3, 4, 5)), axes)
    with pytest.raises(ValueError, match=match):
        nj.standardize(jnp.ones((2, 3, 4, 5)), jnp.zeros(5), jnp.ones(5), epsilon=1e-5,
                       feature_axes=axes)


def test_non_int_axis_raises():
    with pytest.raises(TypeError, match=r"reduction_axes must be ints, got 1.0"):
        nj.moments(jnp.ones((2, 3)), (1.0,))
    with pytest.raises(TypeError, match=r"must be an int or a sequence of ints .*got True"):
        canonicalize_axes(True, 2)


def test_no_reduction_axes_give_elementwise_moments_and_empty_ones_raise():
    x = jnp.arange(6.0).reshape(2, 3)
    m = nj.moments(x, ())  # flax's convention: each element its own group
    np.testing.assert_array_equal(m.mean, x)
    np.testing.assert_array_equal(m.var, np.zeros((2, 3)))
    np.testing.assert_array_equal(m.count, np.ones((2, 3)))
    np.testing.assert_array_equal(nj.moments(x, (), center=False).var, np.asarray(x) ** 2)
    with pytest.raises(ValueError, match=r"hold no elements"):
        nj.moments(jnp.ones((0, 3)), 0)


def test_mask_not_broadcastable_raises():
    with pytest.raises(ValueError, match=r"mask of shape \(3, 1\) does not broadcast to the "
                                         r"input shape \(4, 2\)"):
        nj.moments(jnp.ones((4, 2)), 0, mask=jnp.ones((3, 1), bool))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 4, 2\) would enlarge"):
        nj.moments(jnp.ones((4, 2)), 0, mask=jnp.ones((2, 4, 2), bool))


@pytest.mark.parametrize("name", ["mean", "var", "scale", "bias"])
def test_standardize_shape_mismatch_raises(name):
    args = {"mean": jnp.zeros(3), "var": jnp.ones(3), "scale": jnp.ones(3), "bias": jnp.zeros(3)}
    args[name] = jnp.ones(5)
    with pytest.raises(ValueError, match=rf"{name} has shape \(5,\), expected \(3,\)"):
        nj.standardize(jnp.ones((4, 3)), epsilon=1e-5, **args)


@pytest.mark.parametrize(
    "epsilon", [-1e-5, float("inf"), float("nan"), np.float32(-1.0), jnp.asarray(-1.0)]
)
def test_bad_epsilon_raises(epsilon):
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0"):
        nj.standardize(jnp.ones((4, 3)), jnp.zeros(3), jnp.ones(3), epsilon=epsilon)

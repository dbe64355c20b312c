"""Tests for normjax/accumulation.py: BatchNorm statistics across gradient accumulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from normjax._numerics import Moments
from normjax.norms.batch_norm import batch_norm
from normjax.norms.batch_norm_accumulation import (
    MomentsAccumulator,
    accumulate,
    accumulate_moments,
    accumulated_moments,
    batch_norm_accumulate,
    commit,
    moments_accumulator_init,
    pool_moments,
)
from normjax.running import batch_norm_init
from normjax.stats import moments
from tests.reference_research import ema_np, moments_np

K, B, C = 4, 6, 3


def _data(offset: float = 0.0, shape=(K, B, C), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * rng.uniform(0.5, 2, size=shape[-1]) + offset).astype(
        np.float32)


@jax.jit
def _accumulated_step(xs: jax.Array, state, scale, bias):
    """k micro-batches through batch_norm_accumulate, then one commit (one optimizer step)."""

    def body(acc, x):
        y, acc = batch_norm_accumulate(x, acc, scale=scale, bias=bias, reduction_axes=0)
        return acc, y

    acc, ys = lax.scan(body, moments_accumulator_init(C), xs)
    new_state, reset = commit(state, acc, decay=0.9, running_var="unbiased")
    return ys, new_state, reset


def test_k_micro_batches_equal_one_batch_of_k_times_b():
    xs = _data(offset=5.0)
    state = batch_norm_init(C)._replace(mean=jnp.full((C,), 0.5), var=jnp.full((C,), 2.0))
    scale, bias = jnp.arange(1.0, C + 1), jnp.linspace(-1, 1, C)
    ys, new_state, reset = _accumulated_step(xs, state, scale, bias)
    _, big = batch_norm(xs.reshape(K * B, C), state, reduction_axes=0, train=True, decay=0.9,
                        running_var="unbiased")
    np.testing.assert_allclose(new_state.mean, big.mean, rtol=1e-6)
    np.testing.assert_allclose(new_state.var, big.var, rtol=1e-6)
    assert np.all(np.asarray(new_state.count) == 1) and np.all(np.asarray(big.count) == 1)
    # Each micro-batch is normalized with its own statistics, as batch_norm does (to the
    # accuracy of the guarded one-pass variance both take here: |mean| < 4 std).
    for k in range(K):
        y_k, _ = batch_norm(xs[k], state, scale=scale, bias=bias, reduction_axes=0, train=True)
        np.testing.assert_allclose(ys[k], y_k, rtol=1e-5, atol=4e-6)
    np.testing.assert_array_equal(reset.count, 0)
    np.testing.assert_array_equal(reset.m2, 0)


def test_against_float64_oracle_with_large_offset_and_mask():
    # |mean| = 1e4 * std: the one-pass E[x^2] - E[x]^2 form has no correct digit left in
    # float32; the pooled variance is limited only by the float32 rounding of the means
    # (about ulp(1e4) * |mean_b - mean_a| / var ~ 1e-4 relative).
    xs = _data(offset=1e4, shape=(K, B, 2, C), seed=1)
    masks = np.random.default_rng(2).uniform(size=(K, B, 2, 1)) < 0.7
    acc = moments_accumulator_init(C)
    for k in range(K):
        acc = accumulate(acc, xs[k], reduction_axes=(0, 1), mask=masks[k])
    mean, var, n = moments_np(xs, (0, 1, 2), mask=np.broadcast_to(masks, xs.shape))
    got = accumulated_moments(acc)
    np.testing.assert_allclose(got.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(got.var, var, rtol=1e-3)
    np.testing.assert_array_equal(got.count, n)


def test_commit_against_float64_ema():
    xs = _data(seed=3)
    state = batch_norm_init(C)
    acc = moments_accumulator_init(C)
    for k in range(K):
        acc = accumulate(acc, xs[k], reduction_axes=0)
    new_state, _ = commit(state, acc, decay=0.8)
    mean, var, _ = moments_np(xs, (0, 1))
    np.testing.assert_allclose(new_state.mean, ema_np(0.0, mean, 0.8), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new_state.var, ema_np(1.0, var, 0.8), rtol=1e-5)


def test_pool_moments_unequal_counts_and_empty_entries():
    rng = np.random.default_rng(4)
    parts = [rng.normal(size=(n, C)) + 3 for n in (2, 7, 4)]
    stats = [moments(jnp.asarray(p, jnp.float32), 0) for p in parts]
    empty = Moments(jnp.full((C,), 123.0), jnp.full((C,), 9.0), jnp.zeros((C,)))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *stats, empty)
    pooled = pool_moments(stacked, 0)
    mean, var, n = moments_np(np.concatenate(parts), (0,))
    np.testing.assert_allclose(pooled.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(pooled.var, var, rtol=1e-5)
    np.testing.assert_array_equal(pooled.count, n)
    single = pool_moments(jax.tree.map(lambda a: a[None], stats[1]), 0)
    for a, b in zip(single, stats[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_empty_commit_keeps_state_and_count():
    """An update that saw no data changes nothing, its count included (decay=None and
    debias=True read the count)."""
    state = batch_norm_init(C)._replace(mean=jnp.ones((C,)))
    new_state, _ = commit(state, moments_accumulator_init(C), decay=0.9)
    np.testing.assert_array_equal(new_state.mean, state.mean)
    np.testing.assert_array_equal(new_state.var, state.var)
    np.testing.assert_array_equal(new_state.count, 0)


def test_axis_name_pools_across_members():
    xs = _data(shape=(2, K, B, C), seed=5)  # (device, micro-batch, batch, features)

    def per_device(x):
        acc = moments_accumulator_init(C)
        for k in range(K):
            acc = accumulate(acc, x[k], reduction_axes=0, axis_name="d")
        return accumulated_moments(acc)

    got = jax.vmap(per_device, axis_name="d")(jnp.asarray(xs))
    mean, var, _ = moments_np(xs, (0, 1, 2))
    np.testing.assert_allclose(got.mean[0], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.var[1], var, rtol=1e-5)


def test_vmap_over_independent_accumulators():
    xs = jnp.asarray(_data(shape=(3, B, C), seed=6))
    accs = jax.vmap(lambda x: accumulate(moments_accumulator_init(C), x, reduction_axes=0))(xs)
    for i in range(3):
        mean, var, _ = moments_np(xs[i], (0,))
        np.testing.assert_allclose(accumulated_moments(accs)[0][i], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(accumulated_moments(accs)[1][i], var, rtol=1e-5)


def test_gradients():
    x = jnp.asarray(_data(shape=(B, C), seed=7))
    acc = moments_accumulator_init(C)
    scale = jnp.full((C,), 1.5)

    def f(x, scale):
        y, _ = batch_norm_accumulate(x, acc, scale=scale, reduction_axes=0)
        return y

    check_grads(jax.jit(f), (x, scale), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
    # The accumulated statistics are not differentiated.
    g = jax.grad(lambda x: jnp.sum(batch_norm_accumulate(x, acc, reduction_axes=0)[1].m2))(x)
    np.testing.assert_array_equal(g, 0)


def test_errors():
    with pytest.raises(ValueError, match="features must be positive ints"):
        moments_accumulator_init(0)
    acc = moments_accumulator_init(C)
    with pytest.raises(ValueError, match="accumulator holds features of shape"):
        accumulate(acc, jnp.ones((B, C + 1)), reduction_axes=0)
    with pytest.raises(ValueError, match="accumulator holds features of shape"):
        batch_norm_accumulate(jnp.ones((B, 2, C)), acc, reduction_axes=0)
    with pytest.raises(ValueError, match="accumulator holds features of shape"):
        commit(batch_norm_init(C + 1), acc, decay=0.9)
    with pytest.raises(TypeError, match="acc must be a MomentsAccumulator"):
        accumulate_moments(batch_norm_init(C), moments(jnp.ones((B, C)), 0))
    with pytest.raises(ValueError, match="decay must be in"):
        commit(batch_norm_init(C), acc, decay=1.0)
    assert isinstance(acc, MomentsAccumulator)

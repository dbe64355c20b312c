"""Tests for normjax/precise_bn.py: Precise BatchNorm statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from normjax.norms.batch_norm import batch_norm
from normjax.norms.precise_batch_norm import (
    precise_batch_norm,
    precise_flax_batch_stats,
    precise_moments,
)
from normjax.running import batch_norm_init
from normjax.stats import moments
from tests.reference_research import f64, moments_np, normalize_np

K, B, D, H = 5, 8, 3, 4  # batches, batch size, input features, hidden features
EPS = 1e-5


def _data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(K, B, D)) * [1, 3, 0.5] + [2, -1, 0]).astype(np.float32)


W1 = np.random.default_rng(10).normal(size=(D, H)).astype(np.float32)
W2 = np.random.default_rng(11).normal(size=(H, H)).astype(np.float32)


def _two_layer_stats(batch):
    """Train-mode forward of dense -> BN -> relu -> dense -> BN, returning both BN inputs'
    statistics; the second layer's input depends on the first layer's batch statistics."""
    h1 = batch["x"] @ W1
    y1, _ = batch_norm(h1, batch_norm_init(H), reduction_axes=0, train=True, epsilon=EPS)
    h2 = jax.nn.relu(y1) @ W2
    return {"bn1": moments(h1, 0), "bn2": moments(h2, 0, mask=batch["mask"])}


def _two_layer_oracle(xs: np.ndarray, masks: np.ndarray):
    """Float64: the statistics of the BN inputs over the whole set (layer 2 per batch)."""
    h1 = f64(xs) @ f64(W1)
    h2 = []
    for k in range(K):
        m, v, _ = moments_np(h1[k], (0,))
        h2.append(np.maximum(normalize_np(h1[k], m, v, EPS), 0) @ f64(W2))
    h2 = np.stack(h2)
    mask = np.broadcast_to(masks, h2.shape)
    return moments_np(h1, (0, 1)), moments_np(h2, (0, 1), mask=mask)


def test_raw_states_equal_the_population_statistics():
    xs = _data()
    masks = np.random.default_rng(1).uniform(size=(K, B, 1)) < 0.75  # unequal batch counts
    states = {"bn1": batch_norm_init(H), "bn2": batch_norm_init(H)._replace(count=jnp.array(7))}
    new = precise_batch_norm(_two_layer_stats, states,
                             {"x": jnp.asarray(xs), "mask": jnp.asarray(masks)})
    (m1, v1, _), (m2, v2, n2) = _two_layer_oracle(xs, masks)
    np.testing.assert_allclose(new["bn1"].mean, m1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new["bn1"].var, v1, rtol=1e-5)
    np.testing.assert_allclose(new["bn2"].mean, m2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new["bn2"].var, v2, rtol=1e-4)
    assert int(new["bn2"].count) == 7  # the training step count is kept
    unbiased = precise_batch_norm(_two_layer_stats, states,
                                  {"x": jnp.asarray(xs), "mask": jnp.asarray(masks)},
                                  running_var="unbiased")
    np.testing.assert_allclose(unbiased["bn2"].var, v2 * n2 / (n2 - 1), rtol=1e-4)


def test_population_variance_includes_the_spread_of_batch_means():
    xs = jnp.asarray(_data(seed=2))
    pooled = precise_moments(lambda b: moments(b, 0), xs)
    per_batch = jax.vmap(lambda b: moments(b, 0))(xs)
    mean_of_vars = np.mean(per_batch.var, 0)
    np.testing.assert_allclose(pooled.var, np.var(f64(xs).reshape(-1, D), 0), rtol=1e-5)
    np.testing.assert_allclose(pooled.var - mean_of_vars, np.var(per_batch.mean, 0), rtol=1e-3)
    np.testing.assert_array_equal(pooled.count, K * B)


def test_works_inside_jit():
    xs = jnp.asarray(_data(seed=3))
    pooled = jax.jit(lambda xs: precise_moments(lambda b: moments(b, 0), xs))(xs)
    np.testing.assert_allclose(pooled.mean, f64(xs).reshape(-1, D).mean(0), rtol=1e-5)


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(H, use_bias=False, kernel_init=lambda *_: jnp.asarray(W2))(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=EPS)(x)


class _Model(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(H, use_bias=False, kernel_init=lambda *_: jnp.asarray(W1))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=EPS)(x)
        return _Block()(nn.relu(x), train)


def test_flax_batch_stats_equal_the_population_statistics():
    xs = _data(seed=4)
    model = _Model()
    variables = model.init(jax.random.key(0), jnp.asarray(xs[0]), train=False)
    stats = precise_flax_batch_stats(
        lambda v, b: model.apply(v, b, train=True, mutable=["batch_stats"]),
        variables, jnp.asarray(xs))
    (m1, v1, _), (m2, v2, _) = _two_layer_oracle(xs, np.ones((K, B, 1), bool))
    np.testing.assert_allclose(stats["BatchNorm_0"]["mean"], m1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["BatchNorm_0"]["var"], v1, rtol=1e-5)
    np.testing.assert_allclose(stats["_Block_0"]["BatchNorm_0"]["mean"], m2, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(stats["_Block_0"]["BatchNorm_0"]["var"], v2, rtol=1e-4)
    # The result plugs straight back into the model.
    y = model.apply({**variables, "batch_stats": stats}, jnp.asarray(xs[0]), train=False)
    assert y.shape == (B, H) and np.all(np.isfinite(y))


def test_errors():
    xs = jnp.asarray(_data())
    with pytest.raises(ValueError, match="share a leading axis"):
        precise_moments(lambda b: moments(b, 0), {"a": xs, "b": xs[:2]})
    with pytest.raises(TypeError, match="leaves are normjax.Moments"):
        precise_moments(lambda b: {"bn": b.mean(0)}, xs)
    with pytest.raises(ValueError, match="same pytree structure as states"):
        precise_batch_norm(lambda b: {"a": moments(b, 0)}, {"b": batch_norm_init(D)}, xs)
    with pytest.raises(ValueError, match="was paired with statistics of shape"):
        precise_batch_norm(lambda b: {"a": moments(b, 0)}, {"a": batch_norm_init(D + 1)}, xs)
    with pytest.raises(ValueError, match="running_var must be one of"):
        precise_batch_norm(lambda b: moments(b, 0), batch_norm_init(D), xs, running_var="x")
    model = _Model()
    variables = model.init(jax.random.key(0), xs[0], train=False)
    with pytest.raises(ValueError, match="no flax.linen.BatchNorm in training mode"):
        precise_flax_batch_stats(lambda v, b: model.apply(v, b, train=False), variables, xs)
    with pytest.raises(ValueError, match="no 'batch_stats' collection"):
        precise_flax_batch_stats(lambda v, b: model.apply(v, b, train=True),
                                 {"params": variables["params"]}, xs)

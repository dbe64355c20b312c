"""Tests for batch_norm, its running statistics and its state conventions."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

import normjax as nj
from tests import reference as ref

# (shape, reduction_axes, flax's feature `axis`): MLP, NHWC, NCHW.
LAYOUTS = {
    "mlp": ((6, 4), (0,), -1),
    "nhwc": ((4, 3, 3, 5), (0, 1, 2), -1),
    "nchw": ((4, 5, 3, 3), (0, 2, 3), 1),
}
TOL = {"rtol": 2e-5, "atol": 2e-5}


def _data(shape: tuple[int, ...], seed: int = 0, loc: float = 1.0, std: float = 2.0):
    return jnp.asarray(np.random.default_rng(seed).normal(loc, std, size=shape), jnp.float32)


def _row_mask(shape: tuple[int, ...]) -> np.ndarray:
    """Rows 0..n-2 valid, the last row padding; rank of the input (flax needs that)."""
    mask = np.ones((shape[0],) + (1,) * (len(shape) - 1), bool)
    mask[-1] = False
    return mask


def _params(shape: tuple[int, ...], axes: tuple[int, ...], seed: int = 7):
    feat = tuple(d for i, d in enumerate(shape) if i not in axes)
    rng = np.random.default_rng(seed)
    scale = jnp.asarray(rng.normal(size=feat) + 1, jnp.float32)
    bias = jnp.asarray(rng.normal(size=feat), jnp.float32)
    return scale, bias


def _random_state(features: tuple[int, ...], seed: int = 3) -> nj.BatchNormState:
    rng = np.random.default_rng(seed)
    return nj.BatchNormState(jnp.asarray(rng.normal(size=features), jnp.float32),
                             jnp.asarray(rng.random(features) + 0.5, jnp.float32),
                             jnp.asarray(4, jnp.int32))


def _flax_bn(x, state, scale, bias, *, axis, train, mask=None, momentum=0.9):
    module = nn.BatchNorm(use_running_average=not train, axis=axis, momentum=momentum,
                          epsilon=1e-5, use_fast_variance=False)
    variables = {"params": {"scale": scale, "bias": bias},
                 "batch_stats": {"mean": state.mean, "var": state.var}}
    y, updates = module.apply(variables, x, mask=mask, mutable=["batch_stats"])
    return y, updates["batch_stats"]["mean"], updates["batch_stats"]["var"]


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_matches_reference_and_flax(layout, masked, use_jit):
    shape, axes, axis = LAYOUTS[layout]
    x = _data(shape)
    mask = _row_mask(shape) if masked else None
    scale, bias = _params(shape, axes)
    state = nj.batch_norm_init(scale.shape)
    f = functools.partial(nj.batch_norm, reduction_axes=axes, train=True, decay=0.9)
    f = jax.jit(f) if use_jit else f
    y, new = f(x, state, scale=scale, bias=bias, mask=mask)

    want_y, (mu, var, n) = ref.batch_norm_train(x, axes, scale=scale, bias=bias, mask=mask)
    want_mean, want_var = ref.running_stats_update(0.0, 1.0, 0, mu, var, n, decay=0.9)
    np.testing.assert_allclose(y, want_y, **TOL)
    np.testing.assert_allclose(new.mean, want_mean, **TOL)
    np.testing.assert_allclose(new.var, want_var, **TOL)
    assert np.all(np.asarray(new.count) == 1)

    flax_y, flax_mean, flax_var = _flax_bn(x, state, scale, bias, axis=axis, train=True,
                                           mask=mask)
    np.testing.assert_allclose(y, flax_y, **TOL)
    np.testing.assert_allclose(new.mean, flax_mean, **TOL)
    np.testing.assert_allclose(new.var, flax_var, **TOL)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_eval_matches_reference_and_flax_and_keeps_state(layout):
    shape, axes, axis = LAYOUTS[layout]
    x = _data(shape)
    scale, bias = _params(shape, axes)
    state = _random_state(scale.shape)
    y, same = nj.batch_norm(x, state, scale=scale, bias=bias, reduction_axes=axes, train=False)
    assert same is state
    want = ref.batch_norm_eval(x, state.mean, state.var, axes, scale=scale, bias=bias)
    np.testing.assert_allclose(y, want, **TOL)
    flax_y, flax_mean, flax_var = _flax_bn(x, state, scale, bias, axis=axis, train=False)
    np.testing.assert_allclose(y, flax_y, **TOL)
    np.testing.assert_array_equal(flax_mean, state.mean)  # flax's eval keeps its stats too
    np.testing.assert_array_equal(flax_var, state.var)

    jitted = jax.jit(functools.partial(nj.batch_norm, reduction_axes=axes, train=False))
    y_jit, same_jit = jitted(x, state, scale=scale, bias=bias)
    for a, b in zip(same_jit, state, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    np.testing.assert_allclose(y_jit, y, **TOL)


def test_first_ema_update_pinned_by_formula():
    x = jnp.asarray([[1.0, -2.0], [3.0, 2.0], [5.0, 6.0]])  # batch mean (3, 2), var (8/3, 32/3)
    _, new = nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=0, train=True, decay=0.9)
    np.testing.assert_allclose(new.mean, [0.9 * 0 + 0.1 * 3.0, 0.9 * 0 + 0.1 * 2.0], rtol=1e-6)
    np.testing.assert_allclose(new.var, [0.9 * 1 + 0.1 * 8 / 3, 0.9 * 1 + 0.1 * 32 / 3],
                               rtol=1e-6)
    np.testing.assert_array_equal(new.count, 1)
    init = nj.batch_norm_init((2, 3))
    np.testing.assert_array_equal(init.mean, np.zeros((2, 3)))
    np.testing.assert_array_equal(init.var, np.ones((2, 3)))
    assert init.count.dtype == jnp.int32 and init.mean.dtype == jnp.float32


@pytest.mark.parametrize(
    ("decay", "debias", "running_var"),
    [(0.8, False, "biased"), (None, False, "biased"), (0.8, True, "biased"),
     (0.8, False, "unbiased"), (None, False, "unbiased")],
)
def test_several_updates_match_reference(decay, debias, running_var):
    step = jax.jit(functools.partial(nj.batch_norm, reduction_axes=(0,), train=True,
                                     decay=decay, debias=debias, running_var=running_var))
    state = nj.batch_norm_init(3)
    want_mean, want_var = np.zeros(3), np.ones(3)
    for t in range(4):
        x = _data((5, 3), seed=t, loc=t, std=1 + t)
        _, state = step(x, state)
        _, (mu, var, n) = ref.batch_norm_train(x, 0)
        want_mean, want_var = ref.running_stats_update(
            want_mean, want_var, t, mu, var, n, decay=decay, debias=debias,
            unbiased=running_var == "unbiased")
        np.testing.assert_allclose(state.mean, want_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.var, want_var, rtol=1e-5)
    assert np.all(np.asarray(state.count) == 4)


def test_decay_none_is_cumulative_average():
    batches = [_data((8, 2), seed=s, loc=s) for s in range(5)]
    state = nj.batch_norm_init(2)
    for x in batches:
        _, state = nj.batch_norm(x, state, reduction_axes=0, train=True, decay=None)
    np.testing.assert_allclose(state.mean, np.mean([np.mean(b, 0) for b in batches], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(state.var, np.mean([np.var(b, 0) for b in batches], 0),
                               rtol=1e-5)


def test_pytorch_momentum_converter():
    assert nj.decay_from_momentum(0.1) == pytest.approx(0.9)
    assert nj.decay_from_momentum(1.0) == 0.0
    assert nj.decay_from_momentum(None) is None
    # PyTorch: running = (1 - momentum) * running + momentum * batch.
    x, momentum = _data((6, 2)), 0.3
    _, new = nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=0, train=True,
                           decay=nj.decay_from_momentum(momentum))
    np.testing.assert_allclose(new.mean, momentum * np.mean(x, 0), rtol=1e-6)


def test_unbiased_running_var_uses_n_over_n_minus_1():
    x = _data((5, 2))
    mask = np.array([1, 1, 1, 0, 0], bool)[:, None]  # n = 3
    _, new = nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=0, train=True, decay=0.0,
                           mask=mask, running_var="unbiased")
    np.testing.assert_allclose(new.var, np.var(np.asarray(x)[:3], 0, ddof=1), rtol=1e-5)
    _, biased = nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=0, train=True,
                              decay=0.0, mask=mask)
    np.testing.assert_allclose(new.var / biased.var, 3 / 2, rtol=1e-6)


def test_debias_after_one_step_on_stationary_data():
    x = _data((2048, 4), seed=1, loc=5.0, std=3.0)
    test_x = _data((2048, 4), seed=2, loc=5.0, std=3.0)

    def eval_std(debias: bool) -> np.ndarray:
        _, state = nj.batch_norm(x, nj.batch_norm_init(4), reduction_axes=0, train=True,
                                 decay=0.99, debias=debias)
        y, _ = nj.batch_norm(test_x, state, reduction_axes=0, train=False)
        return np.std(np.asarray(y), 0)

    np.testing.assert_allclose(eval_std(True), 1.0, rtol=0.1)
    assert np.all(np.abs(eval_std(False) - 1) > 1.0)  # ~3: the EMA still holds var ~1


def test_vmap_over_an_ensemble_of_states():
    members = 3
    xs = jnp.stack([_data((6, 2), seed=s, loc=s) for s in range(members)])
    states = nj.BatchNormState(jnp.zeros((members, 2)), jnp.ones((members, 2)),
                               jnp.arange(members, dtype=jnp.int32))
    f = functools.partial(nj.batch_norm, reduction_axes=0, train=True, decay=0.9, debias=True)
    ys, new = jax.vmap(f)(xs, states)
    for i in range(members):
        state_i = jax.tree.map(lambda a, i=i: a[i], states)
        y_i, new_i = f(xs[i], state_i)
        np.testing.assert_allclose(ys[i], y_i, **TOL)
        for a, b in zip(new, new_i, strict=True):
            np.testing.assert_allclose(a[i], b, **TOL)


def test_traced_decay_under_vmap():
    x = _data((6, 2))
    decays = jnp.asarray([0.0, 0.5, 0.9])
    f = lambda d: nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=0, train=True,  # noqa: E731
                                decay=d)[1].mean
    got = jax.vmap(f)(decays)
    mu = np.mean(np.asarray(x, np.float64), 0)
    np.testing.assert_allclose(got, (1 - np.asarray(decays))[:, None] * mu, rtol=1e-5)


def test_scan_over_steps_equals_python_loop():
    xs = jnp.stack([_data((5, 3), seed=s, loc=s) for s in range(4)])
    f = functools.partial(nj.batch_norm, reduction_axes=0, train=True, decay=0.7)

    def step(state, x):
        y, state = f(x, state)
        return state, y

    final, ys = lax.scan(step, nj.batch_norm_init(3), xs)
    state = nj.batch_norm_init(3)
    for t in range(4):
        y, state = f(xs[t], state)
        np.testing.assert_allclose(ys[t], y, **TOL)
    for a, b in zip(final, state, strict=True):
        np.testing.assert_allclose(a, b, **TOL)


def test_no_gradient_flows_into_running_stats():
    x = _data((6, 3))
    scale, bias = _params((6, 3), (0,))

    def stats_sum(x, scale, bias):
        _, new = nj.batch_norm(x, nj.batch_norm_init(3), scale=scale, bias=bias,
                               reduction_axes=0, train=True)
        return jnp.sum(new.mean) + jnp.sum(new.var)

    for g in jax.grad(stats_sum, argnums=(0, 1, 2))(x, scale, bias):
        np.testing.assert_array_equal(g, 0.0)


def test_fully_masked_feature_keeps_its_running_stats():
    x = _data((4, 2))
    mask = np.array([[True, False]] * 4)
    state = _random_state((2,))
    _, new = nj.batch_norm(x, state, reduction_axes=0, train=True, mask=mask, decay=0.5)
    np.testing.assert_array_equal(new.mean[1], state.mean[1])
    np.testing.assert_array_equal(new.var[1], state.var[1])
    np.testing.assert_allclose(new.mean[0], 0.5 * state.mean[0] + 0.5 * np.mean(x[:, 0]),
                               rtol=1e-5)


def test_update_running_stats_from_moments():
    x = _data((6, 3))
    stats = nj.moments(x, 0)
    new = nj.update_running_stats(nj.batch_norm_init(3), stats, decay=0.75)
    _, via_bn = nj.batch_norm(x, nj.batch_norm_init(3), reduction_axes=0, train=True, decay=0.75)
    for a, b in zip(new, via_bn, strict=True):  # batch_norm: guarded one-pass variance
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match=r"running_var must be one of \('biased', 'unbiased'\)"):
        nj.update_running_stats(nj.batch_norm_init(3), stats, decay=0.9, running_var="foo")
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        nj.update_running_stats(nj.batch_norm_init(3), stats, decay=2.0)


def test_nan_padding_does_not_leak_forward():
    x = _data((6, 3))
    mask = np.arange(6)[:, None] < 4
    padded = jnp.where(mask, x, jnp.nan)
    state = nj.batch_norm_init(3)
    y, new = nj.batch_norm(padded, state, reduction_axes=0, train=True, mask=mask)
    want_y, want = nj.batch_norm(x[:4], state, reduction_axes=0, train=True)
    np.testing.assert_allclose(y[:4], want_y, **TOL)
    for a, b in zip(new, want, strict=True):
        np.testing.assert_allclose(a, b, **TOL)


def test_float64_stays_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)))
        y, new = nj.batch_norm(x, nj.batch_norm_init(3, dtype=jnp.float64), reduction_axes=0,
                               train=True, decay=0.5)
        assert y.dtype == new.mean.dtype == new.var.dtype == jnp.float64
        want_y, (mu, var, n) = ref.batch_norm_train(np.asarray(x), 0)
        np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
        want_var = ref.running_stats_update(0.0, 1.0, 0, mu, var, n, decay=0.5)[1]
        np.testing.assert_allclose(new.var, want_var, rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_input_keeps_dtype_and_float32_state(dtype):
    x = _data((8, 3)).astype(dtype)
    y, new = nj.batch_norm(x, nj.batch_norm_init(3), reduction_axes=0, train=True)
    assert y.dtype == dtype and new.mean.dtype == new.var.dtype == jnp.float32
    want, _ = ref.batch_norm_train(np.asarray(x, np.float64), 0)
    np.testing.assert_allclose(np.asarray(y, np.float64), want, atol=2e-2)
    y_eval, _ = nj.batch_norm(x, new, reduction_axes=0, train=False)
    assert y_eval.dtype == dtype


@pytest.mark.parametrize("train", [True, False])
def test_check_grads(train):
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)))
        scale, bias = jnp.linspace(0.5, 1.5, 3), jnp.linspace(-1.0, 1.0, 3)
        state = nj.BatchNormState(jnp.full(3, 0.3), jnp.full(3, 1.7), jnp.zeros((), jnp.int32))

        def f(x, scale, bias):
            return nj.batch_norm(x, state, scale=scale, bias=bias, reduction_axes=0,
                                 train=train)[0]

        check_grads(jax.jit(f), (x, scale, bias), order=2, modes=["rev"])

"""BatchNorm's running statistics and argument checks: no silently wrong state, no bare errors.

The running statistics are checked against a float64 NumPy oracle for float16, bfloat16,
float32 and float64 states (the oracle rounds to the state dtype after every update, as any
stored state must), with masks that empty whole batches and single features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.experimental import checkify

import normjax as nj

C = 3
# (batch mean offset, mask): the second batch is fully masked out, the fourth masks feature 1
MASKS = [np.ones((6, C), bool), np.zeros((6, C), bool), np.ones((6, C), bool),
         np.tile(np.array([True, False, True]), (6, 1))]


def _batches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(6, C)) * (1 + t) + 5.161 + t).astype(np.float32)
            for t in range(len(MASKS))]


def _oracle(dtype: np.dtype, decay: float | None, debias: bool) -> tuple[np.ndarray, ...]:
    """float64 updates of the per-feature statistics, rounded to ``dtype`` after each."""
    mean, var, count = np.zeros(C), np.ones(C), np.zeros(C)
    for x, m in zip(_batches(), MASKS, strict=True):
        x64 = np.asarray(x, np.float64)
        n = m.sum(0)
        seen = n > 0
        mu = np.where(seen, (x64 * m).sum(0) / np.maximum(n, 1), 0)
        v = np.where(seen, (((x64 - mu) ** 2) * m).sum(0) / np.maximum(n, 1), 0)
        if decay is None:
            d = count / (count + 1)
        elif debias:
            d = decay * (1 - decay**count) / (1 - decay ** (count + 1))
        else:
            d = np.full(C, decay)
        mean = np.where(seen, d * mean + (1 - d) * mu, mean).astype(dtype).astype(np.float64)
        var = np.where(seen, d * var + (1 - d) * v, var).astype(dtype).astype(np.float64)
        count = count + seen
    return mean, var, count


def _run(dtype: np.dtype, decay: float | None, debias: bool) -> nj.BatchNormState:
    step = jax.jit(lambda s, x, m: nj.batch_norm(x, s, reduction_axes=0, train=True,
                                                  decay=decay, debias=debias, mask=m)[1])
    state = nj.batch_norm_init(C, dtype=dtype)
    xdt = np.float64 if dtype == np.float64 else np.float32  # float64 batches for a float64 state
    for x, m in zip(_batches(), MASKS, strict=True):
        state = step(state, jnp.asarray(x.astype(xdt)), jnp.asarray(m))
    return state


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize(("decay", "debias"), [(0.9, False), (None, False), (0.9, True)],
                         ids=["ema", "cumulative", "debiased"])
def test_running_stats_match_a_float64_oracle(dtype: str, decay: float | None,
                                              debias: bool) -> None:
    dt = np.dtype(getattr(ml_dtypes, dtype, None) or dtype)
    with jax.enable_x64(dtype == "float64"):
        state = _run(dt, decay, debias)
        assert state.mean.dtype == dt and state.var.dtype == dt
    want_mean, want_var, want_count = _oracle(dt, decay, debias)
    ulp = {"float16": 2**-10, "bfloat16": 2**-7, "float32": 2**-23, "float64": 2**-52}[dtype]
    tol = max(4 * ulp, 1e-12) if dtype == "float64" else 4 * ulp
    np.testing.assert_allclose(np.asarray(state.mean, np.float64), want_mean, rtol=tol)
    np.testing.assert_allclose(np.asarray(state.var, np.float64), want_var, rtol=tol)
    np.testing.assert_array_equal(state.count, want_count)  # only updates that saw data


def test_a_low_precision_state_updates_with_decay_near_one() -> None:
    """A bfloat16 decay of 0.999 rounds to 1: the update must not be computed in bfloat16."""
    step = jax.jit(lambda s: nj.batch_norm(jnp.full((4, 1), 5.0), s, reduction_axes=0,
                                           train=True, decay=0.999)[1])
    state = nj.batch_norm_init(1, dtype=jnp.bfloat16)
    for _ in range(300):
        state = step(state)
    assert float(state.mean[0]) > 0.5  # float32 state: 5 (1 - 0.999^300) = 1.30


def test_masked_out_batch_does_not_count() -> None:
    """The issue's example: an all-False mask, then one batch of mean 5.161, decay=None."""
    x = jnp.full((4, 1), 5.161)
    state = nj.batch_norm_init(1)
    _, state = nj.batch_norm(x, state, reduction_axes=0, train=True, decay=None,
                             mask=jnp.zeros((4, 1), bool))
    _, state = nj.batch_norm(x, state, reduction_axes=0, train=True, decay=None)
    np.testing.assert_allclose(state.mean, [5.161], rtol=1e-6)
    np.testing.assert_array_equal(state.count, [1])


def test_running_stats_carry_no_gradient() -> None:
    """Under stop_gradient (flax's are differentiable): documented in switching_from_flax.md."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 2)), jnp.float32)
    grad = jax.grad(lambda a: jnp.sum(nj.batch_norm(
        a, nj.batch_norm_init(2), reduction_axes=0, train=True)[1].mean))(x)
    np.testing.assert_array_equal(grad, np.zeros((8, 2)))


def test_state_and_argument_types_are_checked() -> None:
    x = jnp.ones((4, 2))
    with pytest.raises(TypeError, match="dtype of the running statistics must be a float"):
        nj.batch_norm_init(2, dtype=jnp.int32)
    with pytest.raises(TypeError, match="must be a float dtype"):
        nj.batch_norm(x, nj.batch_norm_init(2)._replace(mean=jnp.zeros(2, jnp.int32)),
                      reduction_axes=0, train=True)
    with pytest.raises(TypeError, match=r"mask must be boolean \(or integer flags\), got "
                                        r"dtype float32.*mask > 0"):
        nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=0, train=True,
                      mask=jnp.full((4, 2), 0.3))
    int_mask = jnp.asarray([[1, 0], [2, 1], [0, 1], [1, 1]])  # integer flags: nonzero counts
    np.testing.assert_array_equal(
        nj.moments(x * jnp.arange(4.0)[:, None], 0, mask=int_mask).mean,
        nj.moments(x * jnp.arange(4.0)[:, None], 0, mask=int_mask != 0).mean)
    for call, name in [(lambda: nj.moments(x, None), "reduction_axes"),
                       (lambda: nj.moments(x, 0.0), "reduction_axes"),
                       (lambda: nj.group_norm(x, num_groups=1, feature_axes=None),
                        "feature_axes"),
                       (lambda: nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=None,
                                              train=True), "reduction_axes")]:
        with pytest.raises(TypeError, match=rf"{name} must be an int or a sequence of ints"):
            call()
    y, _ = nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=0, train=np.bool_(False))
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-6)


@pytest.mark.parametrize("what", ["epsilon", "decay", "rate"])
def test_traced_invalid_values_are_visible(what: str) -> None:
    """Values only known when the program runs: NaN outputs, and a checkify error."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 2)), jnp.float32)
    calls = {
        "epsilon": (lambda v: nj.layer_norm(x, epsilon=v), -100.0),
        "decay": (lambda v: nj.batch_norm(x, nj.batch_norm_init(2), reduction_axes=0,
                                          train=True, decay=v)[1].mean, 1.5),
        "rate": (lambda v: nj.dropout(jax.random.key(0), x, rate=v, train=True), 1.5),
    }
    fn, bad = calls[what]
    assert np.all(np.isnan(jax.jit(fn)(bad)))
    assert not np.any(np.isnan(jax.jit(fn)(0.5 if what != "epsilon" else 1e-5)))
    err, _ = checkify.checkify(jax.jit(fn), errors=checkify.user_checks)(bad)
    with pytest.raises(checkify.JaxRuntimeError, match=rf"{what}.* got 1?-?\d"):
        err.throw()


def test_unbound_axis_name_names_the_norm_and_the_bound_axes() -> None:
    x = jnp.ones((4, 6, 2))
    with pytest.raises(NameError, match=r"batch_norm\(train=True\): axis_name='batsh' is not "
                                        r"bound here \(bound axis names: \['batch'\]\)"):
        jax.vmap(lambda r: nj.batch_norm(r, nj.batch_norm_init(2), reduction_axes=0,
                                         train=True, axis_name="batsh"), axis_name="batch")(x)
    with pytest.raises(NameError, match=r"moments: axis_name='i' is not bound here "
                                        r"\(bound axis names: none\)"):
        nj.layer_norm(x, axis_name="i")

"""Property-based tests (hypothesis) of the normalizations and of dropout.

Shapes are fixed and every function is jit-compiled once at import, so the examples only vary
values and never trigger a recompilation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import normjax as nj


def _bn(x: jax.Array, epsilon: float) -> jax.Array:
    return nj.batch_norm(x, nj.batch_norm_init(3), reduction_axes=0, train=True,
                         epsilon=epsilon)[0]


# name -> (input shape, normalization, view of an array as (groups layout, reduction axes)).
Case = tuple[tuple[int, ...], Callable[..., jax.Array],
             Callable[[np.ndarray], tuple[np.ndarray, tuple[int, ...]]]]
CASES: dict[str, Case] = {
    "batch_norm": ((16, 3), _bn, lambda a: (a, (0,))),
    "layer_norm": ((3, 16), lambda x, epsilon: nj.layer_norm(x, epsilon=epsilon),
                   lambda a: (a, (1,))),
    "group_norm": ((2, 4, 4, 4),
                   lambda x, epsilon: nj.group_norm(x, num_groups=2, epsilon=epsilon),
                   lambda a: (a.reshape(2, 4, 4, 2, 2), (1, 2, 4))),
    "instance_norm": ((2, 4, 4, 3), lambda x, epsilon: nj.instance_norm(x, epsilon=epsilon),
                      lambda a: (a, (1, 2))),
}
EPSILON = 1e-5
COMPILED = {name: (jax.jit(functools.partial(f, epsilon=EPSILON)),
                   jax.jit(functools.partial(f, epsilon=0.0)))
            for name, (_, f, _) in CASES.items()}
SETTINGS = settings(max_examples=25, deadline=None)


def _inputs(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Arbitrary values in [-10, 10] added to a fixed spread-out pattern.

    hypothesis likes arrays of repeated values; the pattern keeps most groups from being
    constant (where normalization is undefined) without restricting the values drawn.
    """
    base = np.random.default_rng(0).normal(0.0, 3.0, size=shape).astype(np.float32)
    values = hnp.arrays(np.float32, shape, elements=st.floats(-10, 10, width=32))
    return values.map(lambda v: v + base)


def _group_var(name: str, x: np.ndarray) -> np.ndarray:
    grouped, axes = CASES[name][2](np.asarray(x, np.float64))
    return grouped.var(axes)


@pytest.mark.parametrize("name", CASES)
@SETTINGS
@given(data=st.data())
def test_zero_mean_unit_variance_over_the_reduction_axes(name, data):
    x = data.draw(_inputs(CASES[name][0]))
    var_in = _group_var(name, x)
    assume(np.min(var_in) > 1e-2)
    y = np.asarray(COMPILED[name][0](x), np.float64)
    grouped, axes = CASES[name][2](y)
    np.testing.assert_allclose(grouped.mean(axes), 0.0, atol=1e-4)
    # With epsilon the variance is exactly var / (var + epsilon).
    np.testing.assert_allclose(grouped.var(axes), var_in / (var_in + EPSILON), rtol=1e-4)


@pytest.mark.parametrize("name", CASES)
@SETTINGS
@given(data=st.data(), a=st.floats(0.5, 20.0), b=st.floats(-50.0, 50.0))
def test_invariant_to_positive_affine_maps(name, data, a, b):
    x = data.draw(_inputs(CASES[name][0]))
    assume(np.min(_group_var(name, x)) > 1e-2)
    f = COMPILED[name][1]  # epsilon = 0: the invariance is exact up to rounding
    moved = (np.float32(a) * x + np.float32(b)).astype(np.float32)
    np.testing.assert_allclose(f(moved), f(x), atol=2e-3)


DRAWS = 2000


@jax.jit
def _dropout_mean(x: jax.Array, rate: jax.Array) -> jax.Array:
    keys = jax.random.split(jax.random.key(0), DRAWS)
    return jnp.mean(jax.vmap(lambda k: nj.dropout(k, x, rate=rate, train=True))(keys), 0)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(x=_inputs((8,)), rate=st.floats(0.0, 0.9))
def test_dropout_keeps_the_mean_in_expectation(x, rate):
    mean = np.asarray(_dropout_mean(x, jnp.float32(rate)), np.float64)
    # Each unit averages DRAWS samples of x * Bernoulli(1 - rate) / (1 - rate).
    stderr = np.abs(x) * np.sqrt(rate / (1 - rate) / DRAWS)
    assert np.all(np.abs(mean - x) <= 5 * stderr + 1e-5 * (1 + np.abs(x)))

"""The numerics every statistic in normjax shares (a leaf: it imports nothing of normjax but
its types): the :class:`Moments` record, the accumulation dtypes, safe division, pooling of
stacked moments, and the variance guard with its one-pass alternatives.

Re-exported by :mod:`normjax.stats`, whose module notes describe the guard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax._typing import Array

__all__ = ["GUARD_RATIO", "Moments", "abs2", "guarded_variance", "one_pass_unstable",
           "pool_moments", "safe_div", "shifted_moments", "stats_dtype", "work_dtype"]


class Moments(NamedTuple):
    """Statistics over the reduction axes.

    Attributes:
      mean: ``E[x]`` over the reduction axes (zeros when computed with ``center=False``).
      var: the biased (population) variance ``E[(x - E[x])^2]``; ``E[x^2]`` when
        ``center=False``.
      count: number of elements that entered the statistics (per output position; exact
        with masks and across devices), in the statistics dtype.
    """

    mean: Array
    var: Array
    count: Array


def stats_dtype(dtype: Any) -> np.dtype:
    """The dtype statistics are accumulated in: at least float32; float64 stays float64."""
    dtype = np.dtype(dtype)
    if dtype in (np.float64, np.complex128):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def abs2(a: Array) -> Array:
    """``|a|^2``, real: ``a^2`` for real ``a``, ``re^2 + im^2`` for complex."""
    if jnp.iscomplexobj(a):
        return jnp.real(a) ** 2 + jnp.imag(a) ** 2
    return a * a


def work_dtype(dtype: Any) -> np.dtype:
    """The dtype the arithmetic on ``x`` runs in: :func:`stats_dtype`, or its complex form for
    complex input."""
    sdt = stats_dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return np.dtype(np.complex128 if sdt == np.float64 else np.complex64)
    return sdt


#: The one-pass variance is kept where ``mean^2 <= GUARD_RATIO * var`` in every group (its
#: relative error is then at most about ``1 + GUARD_RATIO`` roundings of the statistics dtype).
GUARD_RATIO = 16.0


@jax.custom_batching.custom_vmap
def _any(pred: Array) -> Array:
    """``jnp.any(pred)``; under ``vmap`` it also reduces over the mapped axis (an unbatched
    result), so the ``lax.cond`` it drives stays a branch instead of becoming a select that
    computes both variance formulas for every member."""
    return jnp.any(pred)


@_any.def_vmap
def _any_vmap(axis_size: int, in_batched: list[bool], pred: Array) -> tuple[Array, bool]:
    del axis_size, in_batched
    return jnp.any(pred), False


def one_pass_unstable(mean: Array, one_pass: Array) -> Array:
    """Whether some group has ``mean^2 > GUARD_RATIO * one_pass`` (a scalar bool, unbatched
    under ``vmap``): where the one-pass variance ``one_pass`` may have lost its precision."""
    return _any(lax.stop_gradient(mean * mean - GUARD_RATIO * one_pass) > 0)


def guarded_variance(mean: Array, one_pass: Array, two_pass: Callable[[], Array]
                     ) -> tuple[Array, Array]:
    """``(var, bad)``: ``max(one_pass, 0)`` unless some group has ``mean^2 > GUARD_RATIO *
    one_pass``, then ``two_pass()`` (evaluated only in that case); ``bad`` says which."""
    bad = one_pass_unstable(mean, one_pass)
    var = lax.cond(bad, two_pass, lambda: jnp.maximum(one_pass, 0))
    return var, bad


def pool_moments(stacked: Moments, axis: int | Sequence[int], *, keepdims: bool = False
                 ) -> Moments:
    """Pools statistics stacked along ``axis`` (one axis or several) into the statistics of all
    their elements (Chan, Golub & LeVeque 1979; the law of total variance).

    With weights ``w_i = n_i / n`` and ``n = sum_i n_i``::

        mean = sum_i w_i mean_i
        var  = sum_i w_i (var_i + (mean_i - mean)^2)

    Exact for the biased variance, stable (no ``E[x^2] - E[x]^2`` cancellation) and
    count-weighted, so masks stay exact. Entries with ``n_i = 0`` do not contribute; where
    ``n = 0`` mean and var are 0. A single entry is returned unchanged. Ghost BatchNorm
    (virtual batches), Precise BN and gradient accumulation (many batches) and the backend's
    GroupNorm (channels into groups) all pool with it.
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    n = jnp.sum(stacked.count, axes, keepdims=True)
    w = safe_div(stacked.count, n)
    mean = jnp.sum(w * stacked.mean, axes, keepdims=True)
    dev = stacked.mean - mean
    var = jnp.sum(w * (stacked.var + dev * dev), axes, keepdims=True)
    if not keepdims:
        mean, var, n = (jnp.squeeze(a, axes) for a in (mean, var, n))
    return Moments(mean, var, n)


def shifted_moments(x: Array, axes: Sequence[int]) -> Moments:
    """Keepdims moments over ``axes`` in one pass over ``x`` shifted by its first element.

    With ``k`` the element at index 0 of every reduced axis (one per group) and ``d = x - k``::

        mean = k + sum(d) / n,    var = max(sum(d^2) / n - (sum(d) / n)^2, 0)

    the "shifted data" one-pass algorithm (Chan, Golub & LeVeque 1983, "Algorithms for computing
    the sample variance", The American Statistician 37(3)). Its relative error is about
    ``(1 + 2 z^2)`` roundings of float32, ``z = (k - mean) / std`` the first element's z-score,
    whatever the mean: no cancellation for data far from zero, unlike ``E[x^2] - E[x]^2``. Both
    sums come from one read of ``x`` and there is no data-dependent branch.
    """
    xf = x.astype(stats_dtype(x.dtype))
    first = tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))
    k = lax.stop_gradient(xf[first])
    d = xf - k
    n = float(np.prod([x.shape[a] for a in axes]))
    m1 = jnp.sum(d, axes, keepdims=True) / n
    m2 = jnp.sum(d * d, axes, keepdims=True) / n
    var = jnp.maximum(m2 - m1 * m1, 0)
    return Moments(k + m1, var, jnp.full(m1.shape, n, m1.dtype))


def safe_div(num: Array, den: Array) -> Array:
    """``num / den`` where ``den > 0`` and 0 elsewhere, with finite gradients everywhere."""
    positive = den > 0
    return jnp.where(positive, num / jnp.where(positive, den, 1), 0)

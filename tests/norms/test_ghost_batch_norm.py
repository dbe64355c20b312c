"""Tests for normjax/ghost_batch_norm.py: Ghost (virtual) Batch Normalization."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from normjax.norms.batch_norm import batch_norm
from normjax.norms.ghost_batch_norm import ghost_batch_norm
from normjax.running import batch_norm_init
from tests.reference_research import ema_np, ghost_batch_norm_np, moments_np

N, H, C = 8, 3, 4
NHWC = (0, 1, 2)


def _x(shape=(N, H, H, C), seed: int = 0, offset: float = 0.0) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=shape) * 2 + offset, jnp.float32)


def _params(c: int = C) -> tuple[jax.Array, jax.Array]:
    return jnp.linspace(0.5, 2.0, c), jnp.linspace(-1.0, 1.0, c)


def test_one_virtual_batch_is_exactly_batch_norm():
    x, state = _x(), batch_norm_init(C)
    scale, bias = _params()
    kw = dict(scale=scale, bias=bias, reduction_axes=NHWC, train=True, decay=0.9)
    y, s = ghost_batch_norm(x, state, virtual_batch_size=N, **kw)
    y_ref, s_ref = batch_norm(x, state, **kw)
    np.testing.assert_array_equal(y, y_ref)
    for a, b in zip(s, s_ref, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["full_batch", "virtual_average"])
def test_against_float64_oracle(mode):
    x, state = _x(seed=1, offset=3.0), batch_norm_init(C)
    scale, bias = _params()
    y, s = ghost_batch_norm(x, state, scale=scale, bias=bias, virtual_batch_size=2,
                            reduction_axes=NHWC, train=True, decay=0.9, epsilon=1e-3,
                            running_stats=mode)
    y_ref, means, variances, _ = ghost_batch_norm_np(x, 2, 1e-3, scale, bias, NHWC)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5)
    if mode == "full_batch":
        mean, var, _ = moments_np(x, NHWC)
    else:
        mean, var = means.mean(0), variances.mean(0)
        assert np.all(var < moments_np(x, NHWC)[1])  # omits the spread of the group means
    np.testing.assert_allclose(s.mean, ema_np(0.0, mean, 0.9), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.var, ema_np(1.0, var, 0.9), rtol=1e-5)


def test_virtual_average_unbiased_averages_per_group_unbiased_variances():
    x = _x(shape=(N, C), seed=2)
    _, s = ghost_batch_norm(x, batch_norm_init(C), virtual_batch_size=4, reduction_axes=0,
                            train=True, decay=0.0, running_stats="virtual_average",
                            running_var="unbiased")
    groups = np.asarray(x, np.float64).reshape(2, 4, C)
    np.testing.assert_allclose(s.var, groups.var(1, ddof=1).mean(0), rtol=1e-5)


def test_batch_axis_after_feature_axis_and_mask():
    x = _x(shape=(C, N), seed=3)  # features first, batch last
    mask = np.random.default_rng(4).uniform(size=(1, N)) < 0.8
    mask[0, :2] = True
    y, s = ghost_batch_norm(x, batch_norm_init(C), virtual_batch_size=4, reduction_axes=1,
                            batch_axis=1, train=True, decay=0.0, mask=mask)
    y_ref, *_ = ghost_batch_norm_np(x, 4, 1e-5, reduction_axes=(1,), batch_axis=1, mask=mask)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5)
    mean, var, _ = moments_np(x, (1,), mask=np.broadcast_to(mask, x.shape))
    np.testing.assert_allclose(s.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.var, var, rtol=1e-5)


def test_axis_name_pools_the_gth_chunk_of_every_member():
    d, local, v = 2, 4, 2
    x = _x(shape=(d, local, C), seed=5)
    scale, bias = _params()
    fn = partial(ghost_batch_norm, scale=scale, bias=bias, virtual_batch_size=v,
                 reduction_axes=0, train=True, decay=0.5, axis_name="dev")
    y, s = jax.vmap(fn, in_axes=(0, None), out_axes=(0, None), axis_name="dev")(
        x, batch_norm_init(C))
    # Virtual batch g = rows [g*v:(g+1)*v] of every member, pooled: reorder and compare.
    pooled = x.reshape(d, local // v, v, C).transpose(1, 0, 2, 3).reshape(-1, C)
    y_ref, _ = ghost_batch_norm(pooled, batch_norm_init(C), scale=scale, bias=bias,
                                virtual_batch_size=d * v, reduction_axes=0, train=True,
                                decay=0.5)
    y_ref = y_ref.reshape(local // v, d, v, C).transpose(1, 0, 2, 3).reshape(d, local, C)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    mean, var, _ = moments_np(x, (0, 1))
    np.testing.assert_allclose(s.mean, ema_np(0.0, mean, 0.5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.var, ema_np(1.0, var, 0.5), rtol=1e-5)


def test_eval_is_batch_norm_eval_for_any_batch_size():
    x = _x(shape=(5, C), seed=6)  # 5 is not a multiple of the virtual batch size
    state = batch_norm_init(C)._replace(mean=jnp.ones(C), var=jnp.full((C,), 4.0))
    y, s = ghost_batch_norm(x, state, virtual_batch_size=2, reduction_axes=0, train=False)
    y_ref, _ = batch_norm(x, state, reduction_axes=0, train=False)
    np.testing.assert_array_equal(y, y_ref)
    assert s is state


def test_jit_vmap_and_grad():
    x = _x(shape=(N, C), seed=7)
    scale, bias = _params()
    state = batch_norm_init(C)

    @partial(jax.jit, static_argnames="train")
    def f(x, scale, bias, *, train):
        return ghost_batch_norm(x, state, scale=scale, bias=bias, virtual_batch_size=4,
                                reduction_axes=0, train=train)

    y_ref, *_ = ghost_batch_norm_np(x, 4, 1e-5, scale, bias)
    np.testing.assert_allclose(f(x, scale, bias, train=True)[0], y_ref, rtol=1e-4, atol=1e-5)
    xs = jnp.stack([x, 2 * x + 1])
    ys, _ = jax.vmap(lambda x: f(x, scale, bias, train=True))(xs)
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-4, atol=1e-4)  # invariant to 2x + 1
    check_grads(jax.jit(lambda x, g, b: f(x, g, b, train=True)[0]), (x, scale, bias), order=1,
                modes=["rev"], atol=2e-2, rtol=2e-2)


def test_errors():
    x, state = _x(shape=(N, C)), batch_norm_init(C)
    kw = dict(reduction_axes=0, train=True)
    with pytest.raises(ValueError, match="does not divide the batch of 8"):
        ghost_batch_norm(x, state, virtual_batch_size=3, **kw)
    with pytest.raises(ValueError, match="must be a positive int"):
        ghost_batch_norm(x, state, virtual_batch_size=0, **kw)
    with pytest.raises(ValueError, match="must be a positive int"):
        ghost_batch_norm(x, state, virtual_batch_size=2.0, **kw)
    with pytest.raises(ValueError, match="every output would be zero"):
        ghost_batch_norm(x, state, virtual_batch_size=1, **kw)
    with pytest.raises(ValueError, match="is not one of reduction_axes"):
        ghost_batch_norm(jnp.ones((N, 2, C)), batch_norm_init((N, C)), virtual_batch_size=2,
                         reduction_axes=1, train=True)
    with pytest.raises(ValueError, match="running_stats must be one of"):
        ghost_batch_norm(x, state, virtual_batch_size=2, running_stats="ema", **kw)
    with pytest.raises(ValueError, match="state.mean has shape"):
        ghost_batch_norm(x, batch_norm_init(C + 1), virtual_batch_size=2, **kw)
    with pytest.raises(TypeError, match="train must be a Python bool"):
        ghost_batch_norm(x, state, virtual_batch_size=2, reduction_axes=0, train=1)
    with pytest.raises(ValueError, match="does not broadcast to the input shape"):
        ghost_batch_norm(x, state, virtual_batch_size=2, mask=jnp.ones((3, 1), bool), **kw)
    y, _ = ghost_batch_norm(x, state, virtual_batch_size=np.int64(4), **kw)  # NumPy ints work
    assert y.shape == x.shape

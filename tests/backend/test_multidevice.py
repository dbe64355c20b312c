"""Cross-device statistics: ``axis_name`` under ``jax.vmap`` and ``jax.shard_map`` (8 devices).

The statistics over a named axis must be those of all members' elements pooled together,
weighted by the true (masked) element counts, never a mean of per-member means.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import normjax as nj
from tests import reference as ref

pytestmark = pytest.mark.cpu_only  # eight host devices

TOL = {"rtol": 2e-5, "atol": 2e-5}


@pytest.fixture(scope="module")
def mesh() -> jax.sharding.Mesh:
    assert jax.device_count() == 8
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def _data(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(1.0, 2.0, size=shape), jnp.float32)


def _uneven_row_mask(rows: int, devices: int = 8) -> np.ndarray:
    """Device i (of ``devices`` equal row blocks) holds i + 1 valid rows, capped at the block."""
    per = rows // devices
    return np.concatenate([np.arange(per) <= i for i in range(devices)])[:, None]


def test_eight_host_devices():
    assert jax.device_count() == 8


def test_unequal_members_give_count_weighted_statistics_unlike_flax():
    # Member 0 holds the valid rows [0, 1, 2, 3]; member 1 holds [4] and three padding rows.
    x = jnp.asarray([[0.0, 1.0, 2.0, 3.0], [4.0, 0.0, 0.0, 0.0]])[..., None]
    mask = jnp.asarray([[True] * 4, [True, False, False, False]])[..., None]
    stats = jax.vmap(lambda x, m: nj.moments(x, 0, mask=m, axis_name="batch"),
                     axis_name="batch")(x, mask)
    np.testing.assert_allclose(stats.mean, [[2.0], [2.0]], rtol=1e-6)
    np.testing.assert_allclose(stats.var, [[2.0], [2.0]], rtol=1e-6)
    np.testing.assert_array_equal(stats.count, [[5.0], [5.0]])

    # flax averages the per-member statistics: mean (1.5 + 4) / 2 = 2.75, var 2.1875.
    module = nn.BatchNorm(use_running_average=False, momentum=0.0, axis_name="batch",
                          use_fast_variance=False)
    variables = {"params": {"scale": jnp.ones(1), "bias": jnp.zeros(1)},
                 "batch_stats": {"mean": jnp.zeros(1), "var": jnp.ones(1)}}
    apply = lambda x, m: module.apply(variables, x, mask=m, mutable=["batch_stats"])[1]  # noqa: E731
    flax_stats = jax.vmap(apply, axis_name="batch")(x, mask)["batch_stats"]
    np.testing.assert_allclose(flax_stats["mean"], [[2.75], [2.75]], rtol=1e-6)
    np.testing.assert_allclose(flax_stats["var"], [[2.1875], [2.1875]], rtol=1e-6)

    _, state = jax.vmap(lambda x, m: nj.batch_norm(
        x, nj.batch_norm_init(1), reduction_axes=0, train=True, decay=0.0, mask=m,
        axis_name="batch"), axis_name="batch")(x, mask)
    np.testing.assert_allclose(state.mean, [[2.0], [2.0]], rtol=1e-6)
    np.testing.assert_allclose(state.var, [[2.0], [2.0]], rtol=1e-6)


def test_vmap_axis_name_equals_single_device():
    x = _data((16, 3))
    scale, bias = jnp.asarray([0.5, 1.0, 2.0]), jnp.asarray([0.0, 1.0, -1.0])
    bn = functools.partial(nj.batch_norm, scale=scale, bias=bias, train=True, decay=0.9)
    want_y, want_state = bn(x, nj.batch_norm_init(3), reduction_axes=0)

    # Four members of four rows each, and a per-example BatchNorm (16 members, no reduction axes).
    for members, axes in ((4, (0,)), (16, ())):
        xs = x.reshape(members, 16 // members, 3) if axes else x
        ys, states = jax.vmap(lambda x, axes=axes: bn(
            x, nj.batch_norm_init(3), reduction_axes=axes, axis_name="batch"),
            axis_name="batch")(xs)
        np.testing.assert_allclose(ys.reshape(16, 3), want_y, **TOL)
        for got, want in zip(states, want_state, strict=True):
            np.testing.assert_allclose(got[0], want, **TOL)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("fast_variance", [False, True])
def test_shard_map_batch_norm_equals_single_device(mesh, masked, fast_variance):
    x = _data((64, 3))
    mask = jnp.asarray(_uneven_row_mask(64)) if masked else None
    bn = functools.partial(nj.batch_norm, reduction_axes=0, train=True, decay=0.9,
                           fast_variance=fast_variance)

    sharded = jax.jit(jax.shard_map(
        lambda x, m, s: bn(x, s, mask=m, axis_name="data"), mesh=mesh,
        in_specs=(P("data"), P("data") if masked else None, P()), out_specs=(P("data"), P())))
    y, state = sharded(x, mask, nj.batch_norm_init(3))
    want_y, want_state = bn(x, nj.batch_norm_init(3), mask=mask)
    np.testing.assert_allclose(y, want_y, **TOL)
    for got, want in zip(state, want_state, strict=True):
        np.testing.assert_allclose(got, want, **TOL)


def test_shard_map_unequal_counts_give_the_global_count_weighted_statistic(mesh):
    x = _data((64, 3))
    mask = _uneven_row_mask(64)  # device i holds i + 1 valid rows: 36 in all
    stats_fn = jax.jit(jax.shard_map(
        lambda x, m: nj.moments(x, 0, mask=m, axis_name="data"), mesh=mesh,
        in_specs=(P("data"), P("data")), out_specs=P()))
    stats = stats_fn(x, mask)
    want_mean, want_var, want_n = ref.moments(x, 0, mask)
    np.testing.assert_array_equal(stats.count, np.full(3, 36.0))
    np.testing.assert_allclose(stats.mean, want_mean, **TOL)
    np.testing.assert_allclose(stats.var, want_var, **TOL)
    np.testing.assert_array_equal(want_n, 36.0)
    # A mean of the eight per-device means weights the rows unequally and is clearly different.
    blocks = np.asarray(x).reshape(8, 8, 3)
    mean_of_means = np.mean([blocks[i, : i + 1].mean(0) for i in range(8)], 0)
    assert np.max(np.abs(mean_of_means - want_mean)) > 0.05


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_shard_map_feature_parallel_layer_norm_equals_single_device(mesh, norm):
    x = _data((4, 16))
    scale = jnp.linspace(0.5, 2.0, 16)
    f = getattr(nj, norm)
    sharded = jax.jit(jax.shard_map(
        lambda x, s: f(x, s, axis_name="data"), mesh=mesh,
        in_specs=(P(None, "data"), P("data")), out_specs=P(None, "data")))
    np.testing.assert_allclose(sharded(x, scale), f(x, scale), **TOL)

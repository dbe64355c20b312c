"""normjax.nnx under transforms: nnx.vmap (per-example and ensembles, flax #4760), jax.vmap
with axis_name, and pooled statistics across shards."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fx

import normjax.nnx as nx
from tests.flax_parity import assert_close, assert_same_state, data

# --------------------------------------------------------------------------- transforms


class ConvBN(fx.Module):
    """The model of flax #4760, parametrized by the namespace."""

    def __init__(self, nnx: Any, rngs: Any, **bn_kwargs: Any) -> None:
        self.conv = nnx.Conv(1, 5, kernel_size=3, rngs=rngs)
        self.bn = nnx.BatchNorm(5, momentum=0.8, rngs=rngs, **bn_kwargs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


def test_per_example_batch_norm_under_nnx_vmap_with_axis_name() -> None:
    """flax #4760: a per-example model under nnx.vmap, statistics pooled with axis_name."""
    xs = data((6, 8, 1))

    @fx.vmap(in_axes=(None, 0), out_axes=0, axis_name="batch")
    def per_example(model: Any, x: jax.Array) -> jax.Array:
        return model(x)

    results = []
    for nnx, extra in ((nx, {}), (fx, dict(use_fast_variance=False))):
        model = ConvBN(nnx, nnx.Rngs(0), axis_name="batch", **extra)
        first = per_example(model, xs)
        second = per_example(model, xs)  # the second call must work too
        results.append((first, second, nnx.state(model)))
    (y1_o, y2_o, s_o), (y1_t, y2_t, s_t) = results
    assert_close(y1_o, y1_t)
    assert_close(y2_o, y2_t)
    assert_same_state(s_o, s_t)
    # the same as one BatchNorm over the whole batch
    whole = ConvBN(nx, nx.Rngs(0))
    assert_close(whole(xs), y1_o)


def test_per_example_batch_norm_without_axis_name_raises() -> None:
    """A per-example vector has no batch axis: without axis_name the layer refuses."""
    bn = nx.BatchNorm(5, rngs=nx.Rngs(0))
    with pytest.raises(ValueError, match="reduce over no axes.*axis_name"):
        fx.vmap(lambda m, x: m(x), in_axes=(None, 0))(bn, data((6, 5)))
    with pytest.raises(ValueError, match="reduce over no axes.*axis_name"):
        jax.vmap(nx.BatchNorm(5, rngs=nx.Rngs(0)))(data((6, 5)))


def test_ensemble_under_nnx_vmap() -> None:
    xs = data((4, 8, 1))

    def run(nnx: Any, extra: dict[str, Any]) -> tuple[jax.Array, Any]:
        @fx.split_rngs(splits=3)
        @fx.vmap(in_axes=0, out_axes=0)
        def create(rngs: Any) -> ConvBN:
            return ConvBN(nnx, rngs, **extra)

        @fx.vmap(in_axes=(0, None), out_axes=0)
        def forward(model: ConvBN, x: jax.Array) -> jax.Array:
            return model(x)

        model = create(nnx.Rngs(0))
        return forward(model, xs), nnx.state(model)

    y_o, s_o = run(nx, {})
    y_t, s_t = run(fx, dict(use_fast_variance=False))
    assert_close(y_o, y_t)
    assert_same_state(s_o, s_t)


def test_batch_norm_axis_name_across_jax_vmap() -> None:
    x = data((8, 5))
    bn = nx.BatchNorm(5, axis_name="batch", rngs=nx.Rngs(0))
    graphdef, state = nx.split(bn)

    def per_example(state: Any, xi: jax.Array) -> tuple[jax.Array, Any]:
        layer = nx.merge(graphdef, state)
        return layer(xi), nx.state(layer)

    y, new_state = jax.vmap(per_example, in_axes=(None, 0), out_axes=(0, None),
                            axis_name="batch")(state, x)
    whole = nx.BatchNorm(5, rngs=nx.Rngs(0))
    assert_close(y, whole(x))
    assert_same_state(new_state, nx.state(whole))




def test_group_norm_pools_spatial_shards_with_axis_name() -> None:
    x = data((2, 4, 6))
    ref = nx.GroupNorm(6, num_groups=3, rngs=nx.Rngs(0))
    sharded = nx.GroupNorm(6, num_groups=3, axis_name="shard", rngs=nx.Rngs(0))
    shards = jnp.stack(jnp.split(x, 2, axis=1))
    got = jax.vmap(sharded, axis_name="shard")(shards)
    np.testing.assert_allclose(jnp.concatenate(list(got), axis=1), ref(x), rtol=1e-5, atol=1e-5)

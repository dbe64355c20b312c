"""normjax.linen under flax and JAX transforms: nn.vmap (per-example and ensembles), nn.scan,
jax.vmap with axis_name, and pooled statistics across shards."""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.nn import initializers

import normjax.linen as nnn
from tests.flax_parity import (
    KEY,
    apply,
    assert_close,
    assert_same_variables,
    data,
    flax_exact,
    init,
    jitted,
)

# --------------------------------------------------------------------------- transforms


def _per_example_model(nn: Any, axis_name: Any, nested: bool = False) -> fnn.Module:
    class Body(fnn.Module):
        @fnn.compact
        def __call__(self, x: jax.Array, train: bool) -> jax.Array:
            x = fnn.Dense(4)(x)
            return nn.BatchNorm(use_running_average=not train, axis_name=axis_name,
                                momentum=0.8, **flax_exact(nn))(x)

    def mapped(module: Any, name: str) -> Any:
        return fnn.vmap(module, variable_axes={"params": None, "batch_stats": None},
                        split_rngs={"params": False}, in_axes=(0, None), axis_name=name)

    return mapped(mapped(Body, "inner"), "outer")() if nested else mapped(Body, "batch")()




def _train_and_eval(model: fnn.Module, x: jax.Array) -> tuple[Any, ...]:
    def steps(x: jax.Array) -> tuple[Any, ...]:
        v = model.init(KEY, x, True)
        y, up = model.apply(v, x, True, mutable=["batch_stats"])
        return v, y, up, model.apply({**v, **up}, x, False)

    return jitted(steps, x)


@pytest.mark.parametrize("nested", [False, True])
def test_batch_norm_per_example_under_nn_vmap(nested: bool) -> None:
    """Per-example models under nn.vmap (flax #3319): statistics pooled with axis_name."""
    x = data((2, 4, 3) if nested else (8, 3))
    names = ("outer", "inner") if nested else "batch"
    v_t, y_t, up_t, e_t = _train_and_eval(_per_example_model(fnn, names, nested), x)
    v_o, y_o, up_o, e_o = _train_and_eval(_per_example_model(nnn, names, nested), x)
    assert_same_variables(v_o, v_t)
    assert_close(y_o, y_t)
    assert_same_variables(up_o, up_t)
    assert_close(e_o, e_t)
    # the pooled statistics are the full-batch ones
    flat = x.reshape(-1, 3)
    dense = fnn.Dense(4).apply({"params": v_o["params"]["Dense_0"]}, flat)
    np.testing.assert_allclose(up_o["batch_stats"]["BatchNorm_0"]["mean"],
                               0.2 * dense.mean(0), rtol=1e-5, atol=1e-6)


def test_per_example_batch_norm_without_axis_name_raises() -> None:
    x = data((8, 3))
    with pytest.raises(ValueError, match="axis_name"):
        jitted(lambda x: _per_example_model(nnn, None).init(KEY, x, True), x)
    bn = nnn.BatchNorm(use_running_average=False)
    v = init(bn, x)
    with pytest.raises(ValueError, match="axis_name"):
        jitted(jax.vmap(lambda xi: bn.apply(v, xi, mutable=["batch_stats"])), x)


def test_batch_norm_axis_name_across_jax_vmap() -> None:
    x = data((8, 5))
    bn = nnn.BatchNorm(use_running_average=False, axis_name="batch")
    v = init(bn, x)
    y, up = jitted(jax.vmap(lambda xi: bn.apply(v, xi, mutable=["batch_stats"]),
                            axis_name="batch", out_axes=(0, None)), x)
    full = nnn.BatchNorm(use_running_average=False)
    y_full, up_full = apply(full, v, x, mutable=["batch_stats"])
    assert_close(y, y_full)
    assert_same_variables(up, up_full)


def test_batch_norm_in_ensemble_nn_vmap() -> None:
    def ensemble(nn: Any) -> fnn.Module:
        class Member(fnn.Module):
            @fnn.compact
            def __call__(self, x: jax.Array, train: bool) -> jax.Array:
                x = fnn.Dense(4, kernel_init=initializers.normal(1.0))(x)
                return nn.BatchNorm(use_running_average=not train, **flax_exact(nn))(x)

        return fnn.vmap(Member, variable_axes={"params": 0, "batch_stats": 0},
                        split_rngs={"params": True}, in_axes=(None, None), axis_size=3)()

    x = data((6, 3))
    v_t, y_t, up_t, e_t = _train_and_eval(ensemble(fnn), x)
    v_o, y_o, up_o, e_o = _train_and_eval(ensemble(nnn), x)
    assert_same_variables(v_o, v_t)
    assert_close(y_o, y_t)
    assert_same_variables(up_o, up_t)
    assert_close(e_o, e_t)


def _block(nn: Any, over_layers: bool) -> type[fnn.Module]:
    class Block(fnn.Module):
        @fnn.compact
        def __call__(self, carry: Any, x: Any) -> tuple[Any, Any]:
            h = fnn.Dense(5)(carry if over_layers else x)
            h = nn.BatchNorm(use_running_average=False, momentum=0.8, **flax_exact(nn))(h)
            return (fnn.relu(h), None) if over_layers else (carry, h)

    return Block


def test_batch_norm_in_nn_scan_over_layers() -> None:
    """Scan over layers: one BatchNorm per layer, statistics stacked along the scan."""

    def steps(nn: Any, x: jax.Array) -> tuple[Any, ...]:
        model = fnn.scan(_block(nn, True), variable_axes={"params": 0, "batch_stats": 0},
                         split_rngs={"params": True}, length=3)()
        v = model.init(KEY, x, None)
        return v, *model.apply(v, x, None, mutable=["batch_stats"])

    x = data((6, 5))
    v_t, out_t, up_t = jitted(partial(steps, fnn), x)
    v_o, out_o, up_o = jitted(partial(steps, nnn), x)
    assert_same_variables(v_o, v_t)
    jax.tree.map(assert_close, out_o, out_t)
    assert_same_variables(up_o, up_t)


def test_batch_norm_in_nn_scan_over_time() -> None:
    """Scan over time (flax #2052): one BatchNorm whose statistics are the scan carry."""

    def steps(nn: Any, xs: jax.Array) -> tuple[Any, ...]:
        v = _block(nn, False)().init(KEY, (), xs[0])  # a carried collection is made unscanned
        model = fnn.scan(_block(nn, False), variable_carry="batch_stats",
                         variable_broadcast="params", split_rngs={"params": False})()
        return v, *model.apply(v, (), xs, mutable=["batch_stats"])

    xs = data((4, 6, 3))
    v_t, out_t, up_t = jitted(partial(steps, fnn), xs)
    v_o, out_o, up_o = jitted(partial(steps, nnn), xs)
    assert_same_variables(v_o, v_t)
    jax.tree.map(assert_close, out_o, out_t)
    assert_same_variables(up_o, up_t)




@pytest.mark.parametrize("layer", ["group", "instance"])
def test_group_and_instance_norm_pool_spatial_shards_with_axis_name(layer: str) -> None:
    """Height split over a vmapped 'shard' axis: pooled statistics equal the unsplit layer."""
    x = data((2, 4, 3, 6))
    make = {"group": lambda **kw: nnn.GroupNorm(num_groups=2, **kw),
            "instance": lambda **kw: nnn.InstanceNorm(**kw)}[layer]
    variables = make().init(KEY, x)
    want = make().apply(variables, x)
    shards = jnp.stack(jnp.split(x, 2, axis=1))  # (shard, N, H/2, W, C)
    got = jax.vmap(lambda s: make(axis_name="shard").apply(variables, s), axis_name="shard")(shards)
    np.testing.assert_allclose(jnp.concatenate(list(got), axis=1), want, rtol=1e-5, atol=1e-5)

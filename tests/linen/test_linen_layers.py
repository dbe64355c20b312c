"""normjax.linen against flax.linen: same variables, outputs and statistics; transforms; errors."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import errors as flax_errors
from jax.nn import initializers

import normjax.linen as nnn
from tests.flax_parity import (
    BF16,
    F32,
    KEY,
    apply,
    assert_close,
    assert_same_variables,
    batch_stats_count,
    data,
    flax_exact,
    init,
    jitted,
)

# --------------------------------------------------------------------------- helpers


















# --------------------------------------------------------------------------- BatchNorm parity

BN_CASES = [
    dict(shape=(8, 5), kwargs={}),
    dict(shape=(4, 3, 3, 5), kwargs=dict(momentum=0.9), mask_shape=(4, 1, 1, 1)),
    dict(shape=(4, 5, 3, 3), kwargs=dict(axis=1, use_scale=False, epsilon=1e-3)),
    dict(shape=(4, 3, 6), kwargs=dict(axis=(1, 2), use_bias=False)),
    dict(shape=(6, 5), kwargs=dict(bias_init=initializers.normal(0.5),
                                   scale_init=initializers.normal(1.0))),
    dict(shape=(6, 5), kwargs={}, dtype=BF16),
    dict(shape=(6, 5), kwargs=dict(use_scale=False, use_bias=False), dtype=BF16),
    dict(shape=(6, 5), kwargs=dict(dtype=BF16, param_dtype=BF16)),
]


@pytest.mark.parametrize("case", BN_CASES, ids=lambda c: f"{c['shape']}-{sorted(c['kwargs'])}")
def test_batch_norm_matches_flax(case: dict[str, Any]) -> None:
    x = data(case["shape"], case.get("dtype", F32))
    mask = None
    if "mask_shape" in case:
        mask = np.arange(np.prod(case["mask_shape"])).reshape(case["mask_shape"]) % 3 != 1
    theirs = fnn.BatchNorm(use_fast_variance=False, **case["kwargs"])
    ours = nnn.BatchNorm(**case["kwargs"])
    v_t, y_t, up_t, e_t = jitted(partial(_bn_steps, theirs), x, mask, flax=True)
    v_o, y_o, up_o, e_o = jitted(partial(_bn_steps, ours), x, mask)
    assert_same_variables(v_o, v_t)  # the identical tree: no count by default
    assert_close(y_o, y_t)
    assert_same_variables(up_o, up_t)
    assert_close(e_o, e_t)


def _bn_steps(module: fnn.Module, x: jax.Array, mask: Any) -> tuple[Any, ...]:
    """init, one training step, then evaluation with the updated statistics."""
    v = module.init(KEY, x, use_running_average=False)
    y, up = module.apply(v, x, use_running_average=False, mask=mask, mutable=["batch_stats"])
    return v, y, up, module.apply({**v, **up}, x, use_running_average=True)


def test_batch_norm_init_does_not_update_running_stats() -> None:
    stats = init(nnn.BatchNorm(use_running_average=False), data((8, 5)))["batch_stats"]
    np.testing.assert_array_equal(stats["mean"], np.zeros(5))
    np.testing.assert_array_equal(stats["var"], np.ones(5))
    assert "count" not in stats  # flax's tree; only momentum=None / debias=True add a count
    counted = init(nnn.BatchNorm(use_running_average=False, momentum=None), data((8, 5)))
    np.testing.assert_array_equal(counted["batch_stats"]["count"], np.zeros(5, np.int32))
    assert counted["batch_stats"]["count"].dtype == jnp.int32


def test_flax_checkpoint_without_count_loads_in_both_modes() -> None:
    x = data((8, 5))
    flax_bn = fnn.BatchNorm(use_fast_variance=False, momentum=0.8)
    v = init(flax_bn, x, use_running_average=False)
    _, up = apply(flax_bn, v, x, use_running_average=False, mutable=["batch_stats"])
    flax_vars = {**v, **up}
    assert "count" not in flax_vars["batch_stats"]
    ours = nnn.BatchNorm(momentum=0.8)
    # eval: the collection is immutable and no count is needed or created
    assert_close(apply(ours, flax_vars, x, use_running_average=True),
                 apply(flax_bn, flax_vars, x, use_running_average=True))
    # train: the same update and the same tree (the default EMA needs no count)
    y_o, up_o = apply(ours, flax_vars, x, use_running_average=False, mutable=["batch_stats"])
    y_t, up_t = apply(flax_bn, flax_vars, x, use_running_average=False, mutable=["batch_stats"])
    assert_close(y_o, y_t)
    assert_same_variables(up_o, up_t)
    # an option that needs the count creates it at 0 where the collection is mutable
    _, up_n = apply(nnn.BatchNorm(momentum=None), flax_vars, x, use_running_average=False,
                    mutable=["batch_stats"])
    np.testing.assert_array_equal(batch_stats_count(up_n), np.ones(5))


def test_normjax_variables_load_into_flax() -> None:
    x = data((8, 5))
    ours = nnn.BatchNorm(momentum=0.8)
    v = init(ours, x, use_running_average=False)
    _, up = apply(ours, v, x, use_running_average=False, mutable=["batch_stats"])
    our_vars = {**v, **up}
    flax_bn = fnn.BatchNorm(use_fast_variance=False, momentum=0.8)
    for train in (False, True):
        y_t = apply(flax_bn, our_vars, x, use_running_average=not train, mutable=["batch_stats"])
        y_o = apply(ours, our_vars, x, use_running_average=not train, mutable=["batch_stats"])
        assert_close(y_o[0], y_t[0])
        for name in ("mean", "var"):  # flax passes our count through unchanged
            assert_close(y_o[1]["batch_stats"][name], y_t[1]["batch_stats"][name])


def test_running_stats_options() -> None:
    xs = [data((6, 3), seed=s) for s in range(3)]
    means = [np.asarray(x).mean(0) for x in xs]
    biased = [np.asarray(x).var(0) for x in xs]
    unbiased = [np.asarray(x).var(0, ddof=1) for x in xs]
    cases = [
        # momentum=None: the cumulative average of the batch statistics
        (nnn.BatchNorm(momentum=None), np.mean(means, 0), np.mean(biased, 0)),
        # zero-debiased EMA with decay 0.5: weights 1/4, 1/2, 1 normalized by 1.75
        (nnn.BatchNorm(momentum=0.5, debias=True, running_var="unbiased"),
         np.average(means, axis=0, weights=[0.25, 0.5, 1]),
         np.average(unbiased, axis=0, weights=[0.25, 0.5, 1])),
    ]
    for layer, expect_mean, expect_var in cases:

        def three_steps(xs: list[jax.Array], layer: fnn.Module = layer) -> Any:
            v = layer.init(KEY, xs[0], use_running_average=False)
            for x in xs:
                _, up = layer.apply(v, x, use_running_average=False, mutable=["batch_stats"])
                v = {**v, **up}
            return v["batch_stats"]

        stats = jitted(three_steps, xs)
        np.testing.assert_allclose(stats["mean"], expect_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["var"], expect_var, rtol=1e-5)
        np.testing.assert_array_equal(stats["count"], np.full(3, 3))


def test_batch_norm_eval_with_immutable_stats_leaves_them_untouched() -> None:
    x = data((8, 5))
    bn = nnn.BatchNorm(momentum=None)
    v = init(bn, x, use_running_average=True)
    _, up = apply(bn, v, x, use_running_average=True, mutable=["batch_stats"])
    for name in ("mean", "var", "count"):
        np.testing.assert_array_equal(up["batch_stats"][name], v["batch_stats"][name])


# --------------------------------------------------------------------------- stateless norms

STATELESS_CASES = [
    ("LayerNorm", (4, 6), {}, None),
    ("LayerNorm", (2, 3, 4, 5), dict(reduction_axes=(1, 2, 3), bias_init=initializers.normal()),
     (1, 3, 4, 1)),
    ("LayerNorm", (2, 3, 4, 5), dict(reduction_axes=(2, 3), feature_axes=(1, 3)), None),
    ("LayerNorm", (4, 6), dict(use_scale=False), None, BF16),
    ("RMSNorm", (4, 6), {}, (1, 6)),
    ("RMSNorm", (2, 3, 4), dict(reduction_axes=(1, 2), feature_axes=1), None, BF16),
    ("GroupNorm", (2, 4, 4, 6), dict(num_groups=3), (1, 1, 4, 6)),
    ("GroupNorm", (2, 3, 6), dict(num_groups=None, group_size=2, reduction_axes=(-1,),
                                  use_bias=False), None),
    ("GroupNorm", (2, 4, 6), dict(num_groups=2), None, BF16),
    ("InstanceNorm", (2, 4, 4, 6), {}, (1, 4, 4, 1)),
    ("InstanceNorm", (2, 6, 4, 4), dict(feature_axes=1, scale_init=initializers.normal()), None),
    ("InstanceNorm", (2, 5, 6), dict(dtype=BF16), None),
]


@pytest.mark.parametrize("case", STATELESS_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{sorted(c[2])}")
def test_stateless_norms_match_flax(case: tuple[Any, ...]) -> None:
    name, shape, kwargs, mask_shape, *dtype = case
    x = data(shape, dtype[0] if dtype else F32)
    mask = None
    if mask_shape is not None:
        mask = np.arange(np.prod(mask_shape)).reshape(mask_shape) % 4 != 1
    theirs = getattr(fnn, name)(use_fast_variance=False, **kwargs)
    ours = getattr(nnn, name)(**kwargs)
    v_t, y_t = jitted(partial(_init_apply, theirs), x, mask, flax=True)
    v_o, y_o = jitted(partial(_init_apply, ours), x, mask)
    assert_same_variables(v_o, v_t)
    assert_close(y_o, y_t)


def _init_apply(module: fnn.Module, x: jax.Array, mask: Any) -> tuple[Any, jax.Array]:
    v = module.init(KEY, x)
    return v, module.apply(v, x, mask=mask)


def test_layer_norm_axis_name_pools_features_across_vmap() -> None:
    """Feature-sharded LayerNorm: each vmap member holds one feature column."""
    x = data((4, 6))
    kwargs = dict(reduction_axes=(), use_scale=False, use_bias=False, axis_name="f")

    def sharded(nn: Any) -> jax.Array:
        layer = nn.LayerNorm(**kwargs, **flax_exact(nn))
        return jax.vmap(lambda col: layer.apply({}, col), in_axes=1, out_axes=1,
                        axis_name="f")(x)

    assert_close(sharded(nnn), sharded(fnn))
    assert_close(sharded(nnn), nnn.LayerNorm(use_scale=False, use_bias=False).apply({}, x))


# --------------------------------------------------------------------------- Dropout


@pytest.mark.parametrize("rate, broadcast_dims", [(0.5, ()), (0.3, (1,)), (0.6, (0, 2))])
def test_dropout_matches_flax_bits(rate: float, broadcast_dims: tuple[int, ...]) -> None:
    x = data((4, 5, 3))
    train = dict(deterministic=False, rngs={"dropout": jax.random.key(7)})
    ours = apply(nnn.Dropout(rate, broadcast_dims=broadcast_dims), {}, x, **train)
    theirs = apply(fnn.Dropout(rate, broadcast_dims=broadcast_dims), {}, x, **train)
    assert_close(ours, theirs)
    assert 0 < np.mean(np.asarray(ours) == 0) < 1


def test_dropout_modes_and_constants() -> None:
    x = data((4, 5))
    train = dict(deterministic=False, rngs={"dropout": jax.random.key(3)})
    np.testing.assert_array_equal(apply(nnn.Dropout(0.5), {}, x, deterministic=True), x)
    np.testing.assert_array_equal(apply(nnn.Dropout(0.0), {}, x, **train), x)
    np.testing.assert_array_equal(apply(nnn.Dropout(1.0), {}, x, **train), np.zeros((4, 5)))
    key = dict(deterministic=False, rng=jax.random.key(3))
    assert_close(apply(nnn.Dropout(0.5), {}, x, **key), apply(fnn.Dropout(0.5), {}, x, **key))
    other = apply(nnn.Dropout(0.5, rng_collection="noise"), {}, x, deterministic=False,
                  rngs={"noise": jax.random.key(3)})
    assert_close(other, apply(nnn.Dropout(0.5), {}, x, **train))


def test_dropout_errors() -> None:
    x = data((4, 5))
    with pytest.raises(ValueError, match="passed to the constructor and at call time"):
        nnn.Dropout(0.5, deterministic=True).apply({}, x, True)
    with pytest.raises(ValueError, match="must be passed to the constructor or at call time"):
        nnn.Dropout(0.5).apply({}, x)
    with pytest.raises(flax_errors.InvalidRngError, match="dropout"):
        nnn.Dropout(0.5).apply({}, x, False)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        nnn.Dropout(1.5).apply({}, x, False, rngs={"dropout": KEY})


# --------------------------------------------------------------------------- WeightNorm


@pytest.mark.parametrize(
    "make_layer, shape, kwargs, with_grad",
    [
        (lambda nn: nn.Dense(4), (3, 5), {}, True),
        (lambda nn: nn.Dense(4), (3, 5),
         dict(variable_filter=None, scale_init=initializers.normal()), False),
        (lambda nn: nn.Conv(4, (3, 3)), (2, 6, 6, 3), dict(feature_axes=None), True),
        (lambda nn: nn.Dense(4), (3, 5), dict(use_scale=False), False),
    ],
)
def test_weight_norm_matches_flax(make_layer: Callable[[Any], Any], shape: tuple[int, ...],
                                  kwargs: dict[str, Any], with_grad: bool) -> None:
    x = data(shape)
    theirs = fnn.WeightNorm(make_layer(fnn), **kwargs)
    ours = nnn.WeightNorm(make_layer(nnn), **kwargs)
    (v_t, y_t, g_t), (v_o, y_o, g_o) = (
        jitted(partial(_wn_steps, m, with_grad=with_grad), x) for m in (theirs, ours)
    )
    assert_same_variables(v_o, v_t)
    assert_close(y_o, y_t)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_o, g_t)


def _wn_steps(module: fnn.Module, x: jax.Array, *, with_grad: bool) -> tuple[Any, ...]:
    v = module.init(KEY, x)
    grads = jax.grad(lambda v: jnp.sum(module.apply(v, x) ** 2))(v) if with_grad else None
    return v, module.apply(v, x), grads


# --------------------------------------------------------------------------- errors, namespace


def test_bad_arguments_raise_clear_errors() -> None:
    x = data((2, 4, 4, 6))
    with pytest.raises(ValueError, match="passed to the constructor and at call time"):
        nnn.BatchNorm(use_running_average=True).init(KEY, x, use_running_average=True)
    with pytest.raises(ValueError, match=r"force_float32_reductions=False\) is not supported"):
        nnn.LayerNorm(force_float32_reductions=False).init(KEY, x)
    with pytest.raises(ValueError, match=r"force_float32_reductions=False\) is not supported"):
        nnn.BatchNorm(force_float32_reductions=False).init(KEY, x, use_running_average=True)
    with pytest.raises(ValueError, match="pass `num_groups=None` as argument"):
        nnn.GroupNorm(group_size=2).init(KEY, x)
    with pytest.raises(ValueError, match=r"Number of groups \(4\) does not divide"):
        nnn.GroupNorm(num_groups=4).init(KEY, x)
    with pytest.raises(ValueError, match="must include the final dimension"):
        nnn.GroupNorm(num_groups=2, reduction_axes=(1, 2)).init(KEY, x)
    with pytest.raises(ValueError, match="cannot include the leading dimension"):
        nnn.InstanceNorm(feature_axes=(0, -1)).init(KEY, x)
    with pytest.raises(ValueError, match="out of range"):
        nnn.BatchNorm(axis=4).init(KEY, x, use_running_average=True)
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        nnn.BatchNorm(momentum=1.5).init(KEY, x, use_running_average=False)
    with pytest.raises(ValueError, match="running_var must be one of"):
        nnn.BatchNorm(running_var="sample").init(KEY, x, use_running_average=False)
    with pytest.raises(flax_errors.ModifyScopeVariableError, match="mean"):
        bn = nnn.BatchNorm(use_running_average=False)
        bn.apply(bn.init(KEY, x), x)  # training needs mutable=["batch_stats"], as in flax


def test_namespace_falls_back_to_flax() -> None:
    assert nnn.Dense is fnn.Dense and nnn.compact is fnn.compact and nnn.relu is fnn.relu
    assert nnn.BatchNorm is not fnn.BatchNorm
    assert "BatchNorm" in dir(nnn) and "Dense" in dir(nnn)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchLayer'"):
        _ = nnn.NoSuchLayer

"""normjax.nnx against flax.nnx: same state, outputs and statistics; modes; transforms; errors."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fx
from jax.nn import initializers

import normjax
import normjax.nnx as nx
from tests.flax_parity import BF16, F32, assert_close, assert_same_state, data, flat, jitted

# --------------------------------------------------------------------------- helpers












# --------------------------------------------------------------------------- BatchNorm parity

BN_CASES = [
    dict(shape=(8, 5), kwargs={}),
    dict(shape=(4, 3, 3, 5), kwargs=dict(momentum=0.9), mask_shape=(4, 1, 1, 1)),
    dict(shape=(4, 5, 3), kwargs=dict(axis=1, use_scale=False, epsilon=1e-3)),
    dict(shape=(6, 5), kwargs=dict(use_bias=False, scale_init=initializers.normal(1.0))),
    dict(shape=(6, 5), kwargs={}, dtype=BF16),
    dict(shape=(6, 5), kwargs=dict(dtype=BF16, param_dtype=BF16)),
]


def _bn_steps(nnx: Any, features: int, kwargs: dict[str, Any], x: jax.Array,
              mask: Any) -> tuple[Any, ...]:
    """Build, one training step, then eval: returns the states and outputs."""
    bn = nnx.BatchNorm(features, **kwargs, rngs=nnx.Rngs(0))
    initial = nnx.state(bn)
    y = bn(x, mask=mask)
    bn.eval()
    return initial, y, nnx.state(bn), bn(x)


@pytest.mark.parametrize("case", BN_CASES, ids=lambda c: f"{c['shape']}-{sorted(c['kwargs'])}")
def test_batch_norm_matches_flax(case: dict[str, Any]) -> None:
    x = data(case["shape"], case.get("dtype", F32))
    mask = None
    if "mask_shape" in case:
        mask = np.arange(np.prod(case["mask_shape"])).reshape(case["mask_shape"]) % 3 != 1
    features = case["shape"][case["kwargs"].get("axis", -1)]
    flax_kwargs = dict(case["kwargs"], use_fast_variance=False)
    s0_t, y_t, s1_t, e_t = jitted(partial(_bn_steps, fx, features, flax_kwargs), x, mask,
                                  flax=True)
    s0_o, y_o, s1_o, e_o = jitted(partial(_bn_steps, nx, features, case["kwargs"]), x, mask)
    assert_same_state(s0_o, s0_t)  # the identical state: no count by default
    assert_close(y_o, y_t)
    assert_same_state(s1_o, s1_t)
    assert_close(e_o, e_t)


def test_train_eval_and_view_are_honoured() -> None:
    x = data((8, 4))
    bn = nx.BatchNorm(4, momentum=0.5, debias=True, running_var="unbiased", rngs=nx.Rngs(0))
    assert bn.use_running_average is False
    train_y = bn(x)
    np.testing.assert_array_equal(bn.count[...], 1)
    np.testing.assert_allclose(bn.mean[...], np.asarray(x).mean(0), rtol=1e-5)  # debiased
    bn.eval()
    assert bn.use_running_average is True
    before = nx.state(bn)
    eval_y = bn(x)
    for path, (_, value) in flat(nx.state(bn)).items():
        np.testing.assert_array_equal(value, flat(before)[path][1])
    assert not np.allclose(train_y, eval_y)
    np.testing.assert_array_equal(nx.view(bn, use_running_average=False)(x), train_y)
    np.testing.assert_array_equal(bn.count[...], 2)  # the view shares the statistics
    bn.train()
    assert bn.use_running_average is False
    bn(x, use_running_average=True)  # the call argument wins over the attribute
    np.testing.assert_array_equal(bn.count[...], 2)


def test_flax_state_without_count_loads_with_update() -> None:
    x = data((8, 4))
    theirs = fx.BatchNorm(4, momentum=0.5, use_fast_variance=False, rngs=fx.Rngs(0))
    theirs(x)
    ours = nx.BatchNorm(4, momentum=0.5, rngs=nx.Rngs(1))
    assert "count" not in dict(nx.state(ours))  # flax's state exactly
    nx.update(ours, nx.state(theirs))
    for mode in (True, False):
        assert_close(ours(x, use_running_average=mode), theirs(x, use_running_average=mode))
    assert_close(ours.mean[...], theirs.mean[...])
    # and back
    fresh = fx.BatchNorm(4, momentum=0.5, use_fast_variance=False, rngs=fx.Rngs(2))
    nx.update(fresh, nx.state(ours))
    assert_close(fresh(x, use_running_average=True), ours(x, use_running_average=True))


def test_running_stats_options() -> None:
    xs = [data((6, 3), seed=s) for s in range(3)]
    bn = nx.BatchNorm(3, momentum=None, running_var="unbiased", rngs=nx.Rngs(0))
    for x in xs:
        bn(x)
    np.testing.assert_allclose(bn.mean[...], np.mean([np.asarray(x).mean(0) for x in xs], 0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.var[...],
                               np.mean([np.asarray(x).var(0, ddof=1) for x in xs], 0), rtol=1e-5)
    np.testing.assert_array_equal(bn.count[...], 3)


# --------------------------------------------------------------------------- stateless norms

STATELESS_CASES = [
    ("LayerNorm", (4, 6), {}, (1, 6)),
    ("LayerNorm", (2, 3, 6), dict(reduction_axes=(1, 2), bias_init=initializers.normal()), None),
    ("RMSNorm", (4, 6), dict(scale_init=initializers.normal()), None),
    ("RMSNorm", (4, 6), {}, None, BF16),
    ("GroupNorm", (2, 4, 4, 6), dict(num_groups=3), (1, 1, 4, 6)),
    ("GroupNorm", (2, 3, 6), dict(num_groups=None, group_size=2, reduction_axes=(1, 2)), None,
     BF16),
    ("InstanceNorm", (2, 4, 4, 6), {}, (1, 4, 4, 1)),
    ("InstanceNorm", (2, 6, 4), dict(feature_axes=1, dtype=BF16), None),
]


def _stateless(nnx: Any, name: str, kwargs: dict[str, Any], features: int, x: jax.Array,
               mask: Any) -> tuple[Any, jax.Array]:
    layer = getattr(nnx, name)(features, **kwargs, rngs=nnx.Rngs(0))
    return nnx.state(layer), layer(x, mask=mask)


@pytest.mark.parametrize("case", STATELESS_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{sorted(c[2])}")
def test_stateless_norms_match_flax(case: tuple[Any, ...]) -> None:
    name, shape, kwargs, mask_shape, *dtype = case
    x = data(shape, dtype[0] if dtype else F32)
    mask = None
    if mask_shape is not None:
        mask = np.arange(np.prod(mask_shape)).reshape(mask_shape) % 4 != 1
    features = shape[kwargs.get("feature_axes", -1)]
    flax_kwargs = dict(kwargs, use_fast_variance=False)
    s_t, y_t = jitted(partial(_stateless, fx, name, flax_kwargs, features), x, mask, flax=True)
    s_o, y_o = jitted(partial(_stateless, nx, name, kwargs, features), x, mask)
    assert_same_state(s_o, s_t)
    assert_close(y_o, y_t)


# --------------------------------------------------------------------------- Dropout


def test_dropout_matches_flax_bits_and_advances_the_stream() -> None:
    x = data((4, 6, 3))

    def two_calls(nnx: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        layer = nnx.Dropout(0.4, broadcast_dims=(1,), rngs=nnx.Rngs(params=0, dropout=5))
        return layer(x), layer(x)

    (a_o, b_o), (a_t, b_t) = jitted(partial(two_calls, nx), x), jitted(partial(two_calls, fx), x)
    assert_close(a_o, a_t)
    assert_close(b_o, b_t)
    assert not np.array_equal(a_o, b_o)


def test_dropout_keys_modes_and_constants() -> None:
    x = data((4, 5))
    key = jax.random.key(3)
    ours = nx.Dropout(0.5)
    assert_close(ours(x, rngs=key), fx.Dropout(0.5)(x, rngs=key))
    assert_close(ours(x, rngs=nx.Rngs(dropout=3)), fx.Dropout(0.5)(x, rngs=fx.Rngs(dropout=3)))
    stream = nx.Rngs(dropout=3).dropout
    assert_close(ours(x, rngs=stream), fx.Dropout(0.5)(x, rngs=fx.Rngs(dropout=3).dropout))
    np.testing.assert_array_equal(ours(x, deterministic=True), x)
    np.testing.assert_array_equal(nx.Dropout(1.0)(x), np.zeros((4, 5)))
    np.testing.assert_array_equal(nx.Dropout(0.0)(x), x)
    ours.eval()
    assert ours.deterministic is True
    np.testing.assert_array_equal(ours(x), x)


def test_dropout_errors() -> None:
    x = data((4, 5))
    with pytest.raises(ValueError, match="no `rngs` argument was provided to Dropout"):
        nx.Dropout(0.5)(x)
    with pytest.raises(ValueError, match="No `deterministic`"):
        nx.Dropout(0.5, deterministic=None, rngs=nx.Rngs(0))(x)
    with pytest.raises(TypeError, match="rngs must be"):
        nx.Dropout(0.5, rngs=3)
    with pytest.raises(TypeError, match="rngs must be"):
        nx.Dropout(0.5)(x, rngs=3)


# --------------------------------------------------------------------------- WeightNorm


def test_weight_norm_matches_flax_and_keeps_the_direction() -> None:
    x = data((3, 5))
    ours = nx.WeightNorm(nx.Linear(5, 4, rngs=nx.Rngs(0)), rngs=nx.Rngs(1))
    theirs = fx.WeightNorm(fx.Linear(5, 4, rngs=fx.Rngs(0)), rngs=fx.Rngs(1))
    flat_o, flat_t = flat(nx.state(ours)), flat(fx.state(theirs))
    assert set(flat_o) == set(flat_t)
    kinds = {path: (flat_o[path][0], flat_t[path][0]) for path in flat_o}
    assert kinds[("scales", ("kernel",))] == ("Param", "array")  # ours are trainable
    v = ours.layer_instance.kernel[...]
    assert_close(ours(x), theirs(x))
    np.testing.assert_array_equal(ours.layer_instance.kernel[...], v)


def test_weight_norm_gradients() -> None:
    x = data((3, 5))
    model = nx.WeightNorm(nx.Linear(5, 4, rngs=nx.Rngs(0)), rngs=nx.Rngs(1))
    model.scales[("kernel",)][...] = jnp.arange(1.0, 5.0)
    grads = nx.grad(lambda m: jnp.sum(m(x) ** 2))(model)

    def reference(v: jax.Array, g: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.sum((x @ normjax.weight_norm(v, g) + b[None, :]) ** 2)

    layer = model.layer_instance
    expected = jax.grad(reference, argnums=(0, 1, 2))(
        layer.kernel[...], model.scales[("kernel",)][...], layer.bias[...]
    )
    got = (grads["layer_instance"]["kernel"][...], grads["scales"][("kernel",)][...],
           grads["layer_instance"]["bias"][...])
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_weight_norm_variants() -> None:
    x = data((2, 6, 6, 3))
    for kwargs in (dict(feature_axes=None), dict(use_scale=False),
                   dict(variable_filter=nx.PathContains("bias"))):
        ours = nx.WeightNorm(nx.Conv(3, 4, (3, 3), rngs=nx.Rngs(0)), **kwargs, rngs=nx.Rngs(1))
        theirs = fx.WeightNorm(fx.Conv(3, 4, (3, 3), rngs=fx.Rngs(0)), **kwargs, rngs=fx.Rngs(1))
        assert_close(ours(x), theirs(x))


def test_weight_norm_raises_when_the_wrapped_layer_gains_parameters() -> None:
    model = nx.WeightNorm(nx.Linear(5, 4, rngs=nx.Rngs(0)), rngs=nx.Rngs(1))
    kernel = model.layer_instance.kernel[...]
    model.layer_instance.extra = nx.Linear(4, 4, rngs=nx.Rngs(2))
    with pytest.raises(RuntimeError, match=r"no scale for .*'extra', 'kernel'"):
        model(data((3, 5)))
    np.testing.assert_array_equal(model.layer_instance.kernel[...], kernel)


# --------------------------------------------------------------------------- errors, namespace


def test_bad_arguments_raise_clear_errors() -> None:
    x = data((4, 6))
    with pytest.raises(ValueError, match="No `use_running_average`"):
        nx.BatchNorm(6, use_running_average=None, rngs=nx.Rngs(0))(x)
    with pytest.raises(ValueError, match="pass `num_groups=None` as argument"):
        nx.GroupNorm(6, group_size=2, rngs=nx.Rngs(0))
    with pytest.raises(ValueError, match=r"Number of groups \(4\) does not divide"):
        nx.GroupNorm(6, num_groups=4, rngs=nx.Rngs(0))
    with pytest.raises(ValueError, match=r"Number of features \(6\) is not multiple"):
        nx.GroupNorm(6, num_groups=None, group_size=4, rngs=nx.Rngs(0))
    with pytest.raises(ValueError, match="cannot include the leading dimension"):
        nx.InstanceNorm(4, feature_axes=0, rngs=nx.Rngs(0))(x)
    with pytest.raises(ValueError, match="expected"):
        nx.BatchNorm(5, rngs=nx.Rngs(0))(x)  # 6 features in, 5 declared
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        nx.BatchNorm(6, momentum=-0.1, rngs=nx.Rngs(0))(x)
    with pytest.raises(ValueError, match="single element per feature"):
        nx.BatchNorm(6, rngs=nx.Rngs(0))(x[:1])


def test_namespace_falls_back_to_flax() -> None:
    assert nx.Linear is fx.Linear and nx.Rngs is fx.Rngs and nx.BatchStat is fx.BatchStat
    assert nx.BatchNorm is not fx.BatchNorm
    assert "Dropout" in dir(nx) and "Linear" in dir(nx)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchLayer'"):
        _ = nx.NoSuchLayer

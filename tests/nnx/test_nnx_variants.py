"""normjax.nnx research layers: each equals its pure function on the layer's own state, and
``.train()`` / ``.eval()`` / ``nnx.view`` are honoured."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import normjax
from normjax import nnx as nr
from normjax.norms.decorrelated_batch_norm import WhiteningState
from tests.research_parity import (
    BF16,
    F32,
    assert_close,
    assert_trees_close,
    data,
    general_layer,
    perturb,
    pure_dict,
    shapes,
)

BN_STATE = ("mean", "var", "count")

# --------------------------------------------------------------------------- running statistics

# (id, make(rngs), input shape, pure(x, params, state, train) -> (y, state), param names,
#  state names)
STATEFUL = [
    ("ghost", lambda rngs: nr.GhostBatchNorm(5, virtual_batch_size=4, momentum=0.9,
                                             epsilon=1e-3, running_stats="virtual_average",
                                             rngs=rngs),
     (8, 3, 5),
     lambda x, p, s, train: normjax.ghost_batch_norm(
         x, s, scale=p["scale"], bias=p["bias"], virtual_batch_size=4, reduction_axes=(0, 1),
         train=train, decay=0.9, epsilon=1e-3, running_stats="virtual_average"),
     ("scale", "bias"), BN_STATE),
    ("renorm", lambda rngs: nr.BatchRenorm(3, axis=1, r_max=1.5, d_max=0.25, momentum=0.8,
                                           use_bias=False, rngs=rngs),
     (8, 3, 2),
     lambda x, p, s, train: normjax.batch_renorm(
         x, s, scale=p["scale"], reduction_axes=(0, 2), train=train, r_max=1.5, d_max=0.25,
         decay=0.8),
     ("scale",), BN_STATE),
    ("evonorm-b0", lambda rngs: nr.EvoNormB0(3, feature_axes=1, momentum=0.9, epsilon=1e-3,
                                             running_var="unbiased", rngs=rngs),
     (4, 3, 2, 2),
     lambda x, p, s, train: normjax.evonorm_b0(
         x, s, scale=p["scale"], bias=p["bias"], v=p["v"], train=train, feature_axes=1,
         decay=0.9, epsilon=1e-3, running_var="unbiased"),
     ("scale", "bias", "v"), BN_STATE),
    ("switchable", lambda rngs: nr.SwitchableNorm(5, momentum=0.8, epsilon=1e-4, rngs=rngs),
     (4, 3, 5),
     lambda x, p, s, train: normjax.switchable_norm(
         x, s, scale=p["scale"], bias=p["bias"], mean_logits=p["mean_logits"],
         var_logits=p["var_logits"], train=train, decay=0.8, epsilon=1e-4),
     ("scale", "bias", "mean_logits", "var_logits"), BN_STATE),
    ("dbn", lambda rngs: nr.DecorrelatedBatchNorm(4, group_size=2, momentum=0.9, epsilon=1e-3,
                                                  rngs=rngs),
     (16, 4),
     lambda x, p, s, train: normjax.decorrelated_batch_norm(
         x, s, scale=p["scale"], bias=p["bias"], train=train, decay=0.9, epsilon=1e-3),
     ("scale", "bias"), ("mean", "cov", "count")),
]


def _module_steps(make: Callable[..., Any], x1: jax.Array, x2: jax.Array) -> tuple[Any, ...]:
    """Build (training mode by default), two training calls, ``.eval()``, one call."""
    layer = make(nnx.Rngs(0))
    perturb(layer)
    params, s0 = pure_dict(layer, nnx.Param), pure_dict(layer, nnx.BatchStat)
    y1 = layer(x1)
    s1 = pure_dict(layer, nnx.BatchStat)
    y2 = layer(x2)
    s2 = pure_dict(layer, nnx.BatchStat)
    layer.eval()
    e = layer(x1)
    return params, s0, y1, s1, y2, s2, e, pure_dict(layer, nnx.BatchStat)


def _pure_steps(pure: Callable[..., Any], state_type: type, params: Any, s0: Any,
                x1: jax.Array, x2: jax.Array) -> tuple[Any, ...]:
    y1, s1 = pure(x1, params, state_type(**s0), True)
    y2, s2 = pure(x2, params, s1, True)
    e, s3 = pure(x1, params, s2, False)
    return y1, s1._asdict(), y2, s2._asdict(), e, s3._asdict()


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c[0])
def test_stateful_layer_equals_its_pure_function(case: tuple[Any, ...]) -> None:
    _, make, shape, pure, param_names, state_names = case
    x1, x2 = data(shape, seed=1), data(shape, seed=2)
    params, s0, *ours = jax.jit(partial(_module_steps, make))(x1, x2)
    assert set(params) == set(param_names) and set(s0) == set(state_names)
    state_type = WhiteningState if "cov" in state_names else normjax.BatchNormState
    assert np.all(np.asarray(s0["count"]) == 0)
    theirs = jax.jit(partial(_pure_steps, pure, state_type))(params, s0, x1, x2)
    for o, t in zip(ours, theirs, strict=True):
        assert_trees_close(o, t)
    assert np.all(np.asarray(ours[3]["count"]) == 2)
    assert not np.allclose(ours[0], ours[4], atol=1e-3)  # train and eval differ


def test_modes_call_arguments_and_view() -> None:
    x = data((8, 3))
    layer = nr.BatchRenorm(3, momentum=0.5, rngs=nnx.Rngs(0))
    call = nnx.jit(lambda layer, x: layer(x))
    train_y = call(layer, x)
    assert np.all(np.asarray(layer.count[...]) == 1)
    layer.eval()
    assert layer.use_running_average is True
    before = pure_dict(layer, nnx.BatchStat)
    eval_y = call(layer, x)
    assert_trees_close(pure_dict(layer, nnx.BatchStat), before)
    assert not np.allclose(train_y, eval_y, atol=1e-3)
    call(nnx.view(layer, use_running_average=False), x)  # the view shares the statistics
    assert np.all(np.asarray(layer.count[...]) == 2)
    nnx.jit(lambda layer, x: layer(x, use_running_average=False))(layer, x)  # call arg wins
    assert np.all(np.asarray(layer.count[...]) == 3)
    layer.train()
    assert layer.use_running_average is False
    nnx.jit(lambda layer, x: layer(x, use_running_average=True))(layer, x)
    assert np.all(np.asarray(layer.count[...]) == 3)
    with pytest.raises(ValueError, match="No `use_running_average` was given to SwitchableNorm"):
        nr.SwitchableNorm(5, use_running_average=None, rngs=nnx.Rngs(0))(data((4, 3, 5)))


def test_batch_renorm_call_overrides_clipping_with_traced_values() -> None:
    x = data((8, 3))
    layer = nr.BatchRenorm(3, rngs=nnx.Rngs(0))
    layer.mean[...] = jnp.full((3,), 2.0)

    @nnx.jit
    def step(layer: nr.BatchRenorm, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        r_max, d_max = normjax.renorm_clipping_schedule(t, warmup_steps=10, r_max_steps=20,
                                                        d_max_steps=20)
        state = normjax.BatchNormState(layer.mean[...], layer.var[...], layer.count[...])
        ref = normjax.batch_renorm(x, state, scale=layer.scale[...], bias=layer.bias[...],
                                   reduction_axes=0, train=True, r_max=r_max, d_max=d_max)[0]
        return layer(x, use_running_average=False, r_max=r_max, d_max=d_max), ref

    y, ref = step(layer, jnp.asarray(20))
    assert_close(y, ref)
    plain = normjax.batch_norm(x, normjax.batch_norm_init(3), reduction_axes=0, train=True)[0]
    assert not np.allclose(y, plain, atol=1e-2)  # r_max = 3, d_max = 5 correct the output


def test_ghost_batch_norm_axis_name_across_vmap() -> None:
    x = data((2, 8, 3))
    layer = nr.GhostBatchNorm(3, virtual_batch_size=4, axis_name="d", momentum=0.5,
                              rngs=nnx.Rngs(0))

    @nnx.vmap(in_axes=(None, 0), axis_name="d")
    def member(layer: nr.GhostBatchNorm, x: jax.Array) -> jax.Array:
        return layer(x)

    y = member(layer, x)

    def pure(x: jax.Array) -> tuple[jax.Array, Any]:
        return normjax.ghost_batch_norm(x, normjax.batch_norm_init(3), virtual_batch_size=4,
                                        reduction_axes=0, train=True, decay=0.5, axis_name="d")

    y_ref, s_ref = jax.jit(jax.vmap(pure, axis_name="d"))(x)
    assert_close(y, y_ref)
    assert_close(layer.mean[...], s_ref.mean[0])
    assert_close(layer.var[...], s_ref.var[0])


def test_output_dtype_follows_flax() -> None:
    x = data((8, 3), dtype=BF16)
    assert nr.BatchRenorm(3, rngs=nnx.Rngs(0))(x).dtype == F32
    assert nr.BatchRenorm(3, dtype=BF16, rngs=nnx.Rngs(0))(x).dtype == BF16
    assert nr.FilterResponseNorm(3, dtype=BF16, rngs=nnx.Rngs(0))(x).dtype == BF16


# --------------------------------------------------------------------------- batch-independent

STATELESS = [
    ("frn-tlu-nchw", lambda rngs: nr.FilterResponseNorm(3, feature_axes=1, epsilon=1e-4,
                                                        rngs=rngs),
     (2, 3, 4, 4),
     lambda x, p: normjax.frn_tlu(x, p["scale"], p["bias"], p["tau"], feature_axes=1,
                                  epsilon=1e-4),
     {"scale": (3,), "bias": (3,), "tau": (3,)}),
    ("frn-learned-eps", lambda rngs: nr.FilterResponseNorm(5, learned_epsilon=True,
                                                           use_tlu=False, rngs=rngs),
     (4, 5),
     lambda x, p: normjax.filter_response_norm(x, p["scale"], p["bias"],
                                               epsilon=1e-6 + jnp.abs(p["eps"])),
     {"scale": (5,), "bias": (5,), "eps": ()}),
    ("evonorm-s0", lambda rngs: nr.EvoNormS0(4, None, 2, epsilon=1e-3, rngs=rngs), (2, 3, 4),
     lambda x, p: normjax.evonorm_s0(x, p["scale"], p["bias"], v=p["v"], group_size=2,
                                     epsilon=1e-3),
     {"scale": (4,), "bias": (4,), "v": (4,)}),
]


@pytest.mark.parametrize("case", STATELESS, ids=lambda c: c[0])
def test_batch_independent_layer_equals_its_pure_function(case: tuple[Any, ...]) -> None:
    _, make, shape, pure, expected_shapes = case

    def run(x: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        layer = make(nnx.Rngs(0))
        perturb(layer)
        params = pure_dict(layer, nnx.Param)
        return params, layer(x), pure(x, params)

    params, y, ref = jax.jit(run)(data(shape))
    assert shapes(params) == expected_shapes
    assert_close(y, ref)


# --------------------------------------------------------------------------- dropout variants

DROPOUTS = [
    (partial(nr.SpatialDropout, 0.5, feature_axes=1),
     lambda k, x: normjax.spatial_dropout(k, x, rate=0.5, train=True, feature_axes=1)),
    (partial(nr.AlphaDropout, 0.3, alpha_prime=-1.5),
     lambda k, x: normjax.alpha_dropout(k, x, rate=0.3, train=True, alpha_prime=-1.5)),
    (partial(nr.GaussianDropout, 0.4),
     lambda k, x: normjax.gaussian_dropout(k, x, rate=0.4, train=True)),
]


@pytest.mark.parametrize("case", DROPOUTS, ids=lambda c: c[0].func.__name__)
def test_dropout_variant_equals_its_pure_function(case: tuple[Any, ...]) -> None:
    make, pure = case
    x, key = data((4, 3, 5)), jax.random.key(7)

    def run(x: jax.Array, key: jax.Array) -> tuple[jax.Array, ...]:
        layer = make(rngs=nnx.Rngs(dropout=5))
        stream = nnx.Rngs(dropout=5).dropout.fork()
        first, second = layer(x), layer(x)
        layer.eval()
        forced = layer(x, deterministic=False)  # the call argument wins over .eval()
        return (first, pure(stream(), x), second, pure(stream(), x), forced,
                pure(stream(), x), make()(x, rngs=key), pure(key, x), layer(x))

    *outputs, evaluated = jax.jit(run)(x, key)
    for ours, theirs in zip(outputs[::2], outputs[1::2], strict=True):
        assert_close(ours, theirs)
    assert not np.allclose(outputs[0], outputs[2])  # the stream advances
    np.testing.assert_array_equal(evaluated, x)
    layer = make(rngs=nnx.Rngs(dropout=5))
    layer.eval()
    assert layer.deterministic is True
    np.testing.assert_array_equal(nnx.view(layer, deterministic=True)(x), x)


# --------------------------------------------------------------------------- errors


def test_errors_surface_with_their_messages() -> None:
    x, rngs = data((8, 3, 4)), nnx.Rngs(0)
    cases = [
        (nr.GhostBatchNorm(4, virtual_batch_size=3, rngs=rngs), x, "does not divide the batch"),
        (nr.BatchRenorm(4, r_max=0.5, rngs=rngs), x, "r_max must be >= 1"),
        (nr.SwitchableNorm(4, rngs=rngs), x[:, 0], "at least one spatial axis"),
        (nr.EvoNormB0(4, rngs=rngs), x[:, 0], "needs a spatial axis"),
        (nr.GhostBatchNorm(5, virtual_batch_size=4, rngs=rngs), x, r"state.mean has shape"),
        (nr.FilterResponseNorm(4, feature_axes=0, rngs=rngs), x, "also a batch axis"),
    ]
    for layer, inputs, match in cases:
        with pytest.raises(ValueError, match=match):
            layer(inputs)
    with pytest.raises(ValueError, match="positive divisor"):
        nr.DecorrelatedBatchNorm(4, group_size=3, rngs=rngs)
    with pytest.raises(ValueError, match="exactly one of num_groups and group_size"):
        nr.EvoNormS0(4, group_size=2, rngs=rngs)


def test_wrapper_and_dropout_errors() -> None:
    x, rngs = data((3, 4)), nnx.Rngs(0)
    with pytest.raises(TypeError, match="n_steps must be an int"):
        nr.SpectralNorm(nnx.Linear(4, 5, rngs=rngs), n_steps=1.5, rngs=rngs)
    off = nr.SpectralNorm(nnx.Linear(4, 5, rngs=rngs), n_steps=0, rngs=rngs)  # flax: no-op
    assert not off.batch_stats
    np.testing.assert_array_equal(off(x), off.layer_instance(x))
    with pytest.raises(ValueError, match="D but error_on_non_matrix is True"):
        nr.SpectralNorm(general_layer(rngs), error_on_non_matrix=True, rngs=rngs)
    with pytest.raises(ValueError, match="needs scaled=True"):
        nr.WeightStandardization(nnx.Linear(4, 5, rngs=rngs), use_gain=True, rngs=rngs)
    with pytest.raises(ValueError, match=r"needs rngs=nnx.Rngs"):
        nr.WeightStandardization(nnx.Linear(4, 5, rngs=rngs), scaled=True)
    layer = nr.SpectralNorm(nnx.Linear(4, 5, rngs=rngs), rngs=rngs)
    layer.layer_instance.extra = nnx.Param(jnp.ones((2, 2)))
    with pytest.raises(RuntimeError, match="must not change"):
        layer(x)
    with pytest.raises(ValueError, match="No `update_stats` was given to SpectralNorm"):
        _no_mode_spectral(rngs)(x)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        nr.AlphaDropout(1.0)(x)
    with pytest.raises(ValueError, match="no `rngs` argument was provided"):
        nr.GaussianDropout(0.5)(x)
    with pytest.raises(ValueError, match="No `deterministic` was given to SpatialDropout"):
        nr.SpatialDropout(0.5, deterministic=None, rngs=rngs)(x)


def _no_mode_spectral(rngs: nnx.Rngs) -> nr.SpectralNorm:
    layer = nr.SpectralNorm(nnx.Linear(4, 5, rngs=rngs), rngs=rngs)
    layer.use_running_average = None
    return layer

"""normjax.linen research layers: each equals its pure function on the layer's own variables."""

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

import normjax
from normjax import linen as nr
from normjax.norms.decorrelated_batch_norm import whitening_init
from normjax.running import BatchNormState, batch_norm_init
from tests.research_parity import (
    BF16,
    F32,
    GENERAL,
    KEY,
    assert_close,
    assert_trees_close,
    bn_shapes,
    data,
    perturbed,
    shapes,
    traced,
)

# --------------------------------------------------------------------------- running statistics

# (id, module, input shape, pure(x, params, state, train) -> (y, state), fresh state, shapes)
STATEFUL = [
    ("ghost", nr.GhostBatchNorm(4, momentum=0.9, epsilon=1e-3, running_stats="virtual_average"),
     (8, 3, 5),
     lambda x, p, s, train: normjax.ghost_batch_norm(
         x, s, scale=p["scale"], bias=p["bias"], virtual_batch_size=4, reduction_axes=(0, 1),
         train=train, decay=0.9, epsilon=1e-3, running_stats="virtual_average"),
     batch_norm_init(5), bn_shapes(5)),
    ("ghost-nchw", nr.GhostBatchNorm(2, axis=1, use_bias=False, debias=True), (6, 3, 2),
     lambda x, p, s, train: normjax.ghost_batch_norm(
         x, s, scale=p["scale"], virtual_batch_size=2, reduction_axes=(0, 2), train=train,
         debias=True),
     batch_norm_init(3), {"params": {"scale": (3,)},
                          "batch_stats": {"mean": (3,), "var": (3,), "count": (3,)}}),
    ("renorm", nr.BatchRenorm(r_max=1.5, d_max=0.25, momentum=0.8, running_var="unbiased"),
     (8, 2, 4),
     lambda x, p, s, train: normjax.batch_renorm(
         x, s, scale=p["scale"], bias=p["bias"], reduction_axes=(0, 1), train=train,
         r_max=1.5, d_max=0.25, decay=0.8, running_var="unbiased"),
     batch_norm_init(4), bn_shapes(4)),
    ("evonorm-b0", nr.EvoNormB0(feature_axes=1, momentum=0.9, epsilon=1e-3), (4, 3, 2, 2),
     lambda x, p, s, train: normjax.evonorm_b0(
         x, s, scale=p["scale"], bias=p["bias"], v=p["v"], train=train, feature_axes=1,
         decay=0.9, epsilon=1e-3),
     batch_norm_init(3), bn_shapes(3, v=(3,))),
    ("switchable", nr.SwitchableNorm(momentum=0.8, epsilon=1e-4), (4, 3, 5),
     lambda x, p, s, train: normjax.switchable_norm(
         x, s, scale=p["scale"], bias=p["bias"], mean_logits=p["mean_logits"],
         var_logits=p["var_logits"], train=train, decay=0.8, epsilon=1e-4),
     batch_norm_init(5), bn_shapes(5, mean_logits=(3,), var_logits=(3,))),
    ("dbn", nr.DecorrelatedBatchNorm(group_size=2, momentum=0.9, epsilon=1e-3), (16, 4),
     lambda x, p, s, train: normjax.decorrelated_batch_norm(
         x, s, scale=p["scale"], bias=p["bias"], train=train, decay=0.9, epsilon=1e-3),
     whitening_init(4, group_size=2),
     {"params": {"scale": (4,), "bias": (4,)},
      "batch_stats": {"mean": (4,), "cov": (2, 2, 2), "count": ()}}),
]


def _module_steps(module: fnn.Module, x1: jax.Array, x2: jax.Array) -> tuple[Any, ...]:
    """init, two training steps, then evaluation."""
    v = module.init(KEY, x1, use_running_average=False)
    v = {**v, "params": perturbed(v["params"])}
    y1, s1 = module.apply(v, x1, use_running_average=False, mutable=["batch_stats"])
    y2, s2 = module.apply({**v, **s1}, x2, use_running_average=False, mutable=["batch_stats"])
    e, s3 = module.apply({**v, **s2}, x1, use_running_average=True, mutable=["batch_stats"])
    return v, y1, dict(s1["batch_stats"]), y2, dict(s2["batch_stats"]), e, dict(
        s3["batch_stats"])


def _pure_steps(pure: Callable[..., Any], state_type: type, v: Any, x1: jax.Array,
                x2: jax.Array) -> tuple[Any, ...]:
    params = v["params"]
    y1, s1 = pure(x1, params, state_type(**v["batch_stats"]), True)
    y2, s2 = pure(x2, params, s1, True)
    e, s3 = pure(x1, params, s2, False)
    return y1, s1._asdict(), y2, s2._asdict(), e, s3._asdict()


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c[0])
def test_stateful_layer_equals_its_pure_function(case: tuple[Any, ...]) -> None:
    _, module, shape, pure, fresh, expected_shapes = case
    x1, x2 = data(shape, seed=1), data(shape, seed=2)
    v, *ours = jax.jit(partial(_module_steps, module))(x1, x2)
    assert shapes(v) == expected_shapes
    assert_trees_close(v["batch_stats"], fresh._asdict())  # init does not update
    theirs = jax.jit(partial(_pure_steps, pure, type(fresh)))(v, x1, x2)
    for o, t in zip(ours, theirs, strict=True):  # outputs and states, train and eval
        assert_trees_close(o, t)
    assert np.all(np.asarray(ours[3]["count"]) == 2)
    assert not np.allclose(ours[0], ours[4], atol=1e-3)  # train and eval differ


def test_batch_renorm_takes_traced_clipping_from_a_schedule() -> None:
    module = nr.BatchRenorm(momentum=0.5)
    x = data((8, 3))
    v = module.init(KEY, x, use_running_average=False)
    v = {**v, "batch_stats": {**v["batch_stats"], "mean": jnp.full((3,), 2.0)}}

    @jax.jit
    def step(v: Any, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        r_max, d_max = normjax.renorm_clipping_schedule(t, warmup_steps=10, r_max_steps=20,
                                                        d_max_steps=20)
        y = module.apply(v, x, use_running_average=False, r_max=r_max, d_max=d_max,
                         mutable=["batch_stats"])[0]
        ref = normjax.batch_renorm(x, BatchNormState(**v["batch_stats"]), scale=v["params"]
                                   ["scale"], bias=v["params"]["bias"], reduction_axes=0,
                                   train=True, r_max=r_max, d_max=d_max)[0]
        return y, ref

    y0, ref0 = step(v, x, jnp.asarray(0))
    bn = normjax.batch_norm(x, batch_norm_init(3), reduction_axes=0, train=True)[0]
    assert_close(y0, ref0)
    assert_close(y0, bn, tol=1e-5)  # warm-up: r_max = 1, d_max = 0 is plain BatchNorm
    y1, ref1 = step(v, x, jnp.asarray(20))
    assert_close(y1, ref1)
    assert not np.allclose(y1, y0, atol=1e-2)


def test_ghost_batch_norm_axis_name_pools_across_vmap_and_inits_outside_it() -> None:
    module = nr.GhostBatchNorm(4, axis_name="d", momentum=0.5)
    x = data((2, 8, 3))
    v = module.init(KEY, x[0], use_running_average=False)  # no named axis during init

    def member(x: jax.Array) -> tuple[jax.Array, Any]:
        return module.apply(v, x, use_running_average=False, mutable=["batch_stats"])

    y, s = jax.jit(jax.vmap(member, axis_name="d"))(x)

    def pure(x: jax.Array) -> tuple[jax.Array, Any]:
        return normjax.ghost_batch_norm(x, batch_norm_init(3), scale=v["params"]["scale"],
                                        bias=v["params"]["bias"], virtual_batch_size=4,
                                        reduction_axes=0, train=True, decay=0.5, axis_name="d")

    y_ref, s_ref = jax.jit(jax.vmap(pure, axis_name="d"))(x)
    assert_close(y, y_ref)
    assert_trees_close(dict(s["batch_stats"]), s_ref._asdict())


def test_output_dtype_follows_flax() -> None:
    x = data((8, 3), dtype=BF16)
    promoted = nr.BatchRenorm()
    v = promoted.init(KEY, x, use_running_average=False)
    assert promoted.apply(v, x, use_running_average=True).dtype == F32  # flax's promotion
    assert nr.BatchRenorm(dtype=BF16).apply(v, x, use_running_average=True).dtype == BF16


# --------------------------------------------------------------------------- batch-independent

# (id, module, input shape, pure(x, params) -> y, param shapes)
STATELESS = [
    ("frn-tlu-nchw", nr.FilterResponseNorm(feature_axes=1, epsilon=1e-4), (2, 3, 4, 4),
     lambda x, p: normjax.frn_tlu(x, p["scale"], p["bias"], p["tau"], feature_axes=1,
                                  epsilon=1e-4),
     {"scale": (3,), "bias": (3,), "tau": (3,)}),
    ("frn-learned-eps", nr.FilterResponseNorm(learned_epsilon=True, use_tlu=False), (4, 5),
     lambda x, p: normjax.filter_response_norm(x, p["scale"], p["bias"],
                                               epsilon=1e-6 + jnp.abs(p["eps"])),
     {"scale": (5,), "bias": (5,), "eps": ()}),
    ("evonorm-s0", nr.EvoNormS0(num_groups=None, group_size=2, epsilon=1e-3), (2, 3, 4),
     lambda x, p: normjax.evonorm_s0(x, p["scale"], p["bias"], v=p["v"], group_size=2,
                                     epsilon=1e-3),
     {"scale": (4,), "bias": (4,), "v": (4,)}),
]


@pytest.mark.parametrize("case", STATELESS, ids=lambda c: c[0])
def test_batch_independent_layer_equals_its_pure_function(case: tuple[Any, ...]) -> None:
    _, module, shape, pure, expected_shapes = case
    x = data(shape)

    def run(x: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        params = perturbed(module.init(KEY, x)["params"])
        return params, module.apply({"params": params}, x), pure(x, params)

    params, y, ref = jax.jit(run)(x)
    assert shapes(params) == expected_shapes
    assert_close(y, ref)


def test_frn_initial_params_follow_the_paper() -> None:
    module = nr.FilterResponseNorm(learned_epsilon=True)
    v = jax.jit(lambda x: module.init(KEY, x))(data((2, 3, 3, 4)))["params"]
    for name, value in (("scale", 1.0), ("bias", 0.0), ("tau", 0.0)):
        np.testing.assert_array_equal(v[name], np.full((4,), value, np.float32))
    np.testing.assert_allclose(v["eps"], 1e-4)


# --------------------------------------------------------------------------- dropout variants


class DropoutKey(fnn.Module):
    """Draws the key a top-level dropout layer draws from the ``"dropout"`` stream."""

    @fnn.compact
    def __call__(self) -> jax.Array:
        return self.make_rng("dropout")


DROPOUTS = [
    (nr.SpatialDropout(0.5, feature_axes=1),
     lambda k, x: normjax.spatial_dropout(k, x, rate=0.5, train=True, feature_axes=1)),
    (nr.AlphaDropout(0.3, alpha_prime=-1.5),
     lambda k, x: normjax.alpha_dropout(k, x, rate=0.3, train=True, alpha_prime=-1.5)),
    (nr.GaussianDropout(0.4),
     lambda k, x: normjax.gaussian_dropout(k, x, rate=0.4, train=True)),
]


@pytest.mark.parametrize("case", DROPOUTS, ids=lambda c: type(c[0]).__name__)
def test_dropout_variant_equals_its_pure_function(case: tuple[Any, ...]) -> None:
    module, pure = case
    x, key = data((4, 3, 5)), jax.random.key(7)

    def run(x: jax.Array, key: jax.Array) -> tuple[jax.Array, ...]:
        stream = module.apply({}, x, deterministic=False, rngs={"dropout": key})
        drawn = DropoutKey().apply({}, rngs={"dropout": key})
        given = module.apply({}, x, deterministic=False, rng=key)
        return stream, pure(drawn, x), given, pure(key, x)

    stream, stream_ref, given, given_ref = jax.jit(run)(x, key)
    assert_close(stream, stream_ref)
    assert_close(given, given_ref)
    assert not np.allclose(given, x)
    np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
    eval_module = module.clone(deterministic=True)
    np.testing.assert_array_equal(eval_module.apply({}, x), x)


# --------------------------------------------------------------------------- errors


def test_errors_surface_with_their_messages() -> None:
    x = data((8, 3, 4))
    cases = [
        (nr.GhostBatchNorm(3), x, "does not divide the batch"),
        (nr.BatchRenorm(r_max=0.5), x, "r_max must be >= 1"),
        (nr.SwitchableNorm(), x[:, 0], "at least one spatial axis"),
        (nr.EvoNormB0(), x[:, 0], "needs a spatial axis"),
        (nr.DecorrelatedBatchNorm(group_size=3), x, "positive divisor"),
    ]
    for module, inputs, match in cases:
        with pytest.raises(ValueError, match=match):
            traced(partial(module.init, KEY, use_running_average=False), inputs)
    with pytest.raises(ValueError, match="use_running_average"):
        nr.GhostBatchNorm(4).init(KEY, x)
    v = traced(partial(nr.GhostBatchNorm(4).init, KEY, use_running_average=False), x)
    with pytest.raises(flax_errors.ModifyScopeVariableError, match="batch_stats"):
        traced(partial(nr.GhostBatchNorm(4).apply, use_running_average=False), v, x)
    with pytest.raises(ValueError, match="exactly one of num_groups and group_size"):
        nr.EvoNormS0(group_size=2).init(KEY, x)
    with pytest.raises(ValueError, match="also a batch axis"):
        nr.FilterResponseNorm(feature_axes=0).init(KEY, x)


def test_wrapper_and_dropout_errors() -> None:
    x, images = data((3, 4)), data((2, 3, 5))
    with pytest.raises(TypeError, match="n_steps must be an int"):
        nr.SpectralNorm(fnn.Dense(5), n_steps=1.5).init(KEY, x, update_stats=True)
    off = nr.SpectralNorm(fnn.Dense(5), n_steps=0)  # flax: the weights pass through
    y, v = off.init_with_output(KEY, x, update_stats=True)
    assert "batch_stats" not in v
    np.testing.assert_array_equal(y, fnn.Dense(5).apply({"params": v["params"]["layer_instance"]},
                                                         x))
    with pytest.raises(ValueError, match=r"Input is \dD but error_on_non_matrix is True"):
        nr.SpectralNorm(GENERAL(), error_on_non_matrix=True).init(
            KEY, images, update_stats=True)
    with pytest.raises(ValueError, match="needs scaled=True"):
        nr.WeightStandardization(fnn.Dense(5), use_gain=True).init(KEY, x)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        nr.AlphaDropout(1.0).apply({}, x, deterministic=False)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        nr.GaussianDropout(-0.1).apply({}, x, deterministic=False, rng=KEY)
    with pytest.raises(flax_errors.InvalidRngError, match="dropout"):
        nr.SpatialDropout(0.5).apply({}, x, deterministic=False)
    with pytest.raises(ValueError, match="deterministic"):
        nr.GaussianDropout(0.5).apply({}, x)

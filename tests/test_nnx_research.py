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
from normjax import _nnx_research as nr
from normjax.spectral_norm import SpectralNormState
from normjax.whitening import WhiteningState

F32, BF16 = jnp.float32, jnp.bfloat16
KEY = jax.random.key(0)


# --------------------------------------------------------------------------- helpers


def data(shape: tuple[int, ...], seed: int = 1, dtype: Any = F32) -> jax.Array:
    x = np.random.default_rng(seed).normal(0.5, 2.0, size=shape).astype(np.float32)
    return jnp.asarray(x).astype(dtype)


def perturb(module: nnx.Module, key: jax.Array = KEY) -> None:
    """Adds N(0, 0.5^2) noise to every ``nnx.Param``, so that forwarding each is tested."""
    params = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [p + 0.5 * jax.random.normal(k, jnp.shape(p), jnp.result_type(p))
             for p, k in zip(leaves, keys, strict=True)]
    nnx.update(module, jax.tree.unflatten(treedef, noisy))


def pure_dict(module: nnx.Module, kind: Any) -> dict[str, Any]:
    return nnx.state(module, kind).to_pure_dict()


def assert_close(ours: Any, theirs: Any, tol: float = 1e-6) -> None:
    ours, theirs = jnp.asarray(ours), jnp.asarray(theirs)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (ours, theirs)
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32),
                               rtol=tol, atol=tol)


def assert_trees_close(ours: Any, theirs: Any) -> None:
    assert jax.tree.structure(ours) == jax.tree.structure(theirs), (ours, theirs)
    jax.tree.map(assert_close, ours, theirs)


def shapes(tree: Any) -> Any:
    return jax.tree.map(jnp.shape, tree)


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
    ("evonorm-b0", lambda rngs: nr.EvoNormB0(3, channel_axis=1, momentum=0.9, epsilon=1e-3,
                                             running_var="unbiased", rngs=rngs),
     (4, 3, 2, 2),
     lambda x, p, s, train: normjax.evonorm_b0(
         x, s, scale=p["scale"], bias=p["bias"], v=p["v"], train=train, channel_axis=1,
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
    assert int(s0["count"]) == 0
    theirs = jax.jit(partial(_pure_steps, pure, state_type))(params, s0, x1, x2)
    for o, t in zip(ours, theirs, strict=True):
        assert_trees_close(o, t)
    assert int(ours[3]["count"]) == 2
    assert not np.allclose(ours[0], ours[4], atol=1e-3)  # train and eval differ


def test_modes_call_arguments_and_view() -> None:
    x = data((8, 3))
    layer = nr.BatchRenorm(3, momentum=0.5, rngs=nnx.Rngs(0))
    call = nnx.jit(lambda layer, x: layer(x))
    train_y = call(layer, x)
    assert int(layer.count[...]) == 1
    layer.eval()
    assert layer.use_running_average is True
    before = pure_dict(layer, nnx.BatchStat)
    eval_y = call(layer, x)
    assert_trees_close(pure_dict(layer, nnx.BatchStat), before)
    assert not np.allclose(train_y, eval_y, atol=1e-3)
    call(nnx.view(layer, use_running_average=False), x)  # the view shares the statistics
    assert int(layer.count[...]) == 2
    nnx.jit(lambda layer, x: layer(x, use_running_average=False))(layer, x)  # call arg wins
    assert int(layer.count[...]) == 3
    layer.train()
    assert layer.use_running_average is False
    nnx.jit(lambda layer, x: layer(x, use_running_average=True))(layer, x)
    assert int(layer.count[...]) == 3
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
    ("frn-tlu-nchw", lambda rngs: nr.FilterResponseNorm(3, channel_axis=1, epsilon=1e-4,
                                                        rngs=rngs),
     (2, 3, 4, 4),
     lambda x, p: normjax.frn_tlu(x, p["scale"], p["bias"], p["tau"], channel_axis=1,
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


# --------------------------------------------------------------------------- SpectralNorm


def general_layer(rngs: nnx.Rngs) -> nnx.LinearGeneral:
    """A layer with a rank-3 ``(..., in, out)`` kernel, a conv kernel's layout (fast to
    compile)."""
    return nnx.LinearGeneral((3, 5), 4, axis=(-2, -1), rngs=rngs)


def _spectral_steps(x: jax.Array) -> tuple[Any, ...]:
    """One training call and one evaluation call, with the pure function's results."""
    layer = nr.SpectralNorm(nnx.Linear(4, 5, rngs=nnx.Rngs(0)), n_steps=2, rngs=nnx.Rngs(1))
    kernel, bias = layer.layer_instance.kernel[...], layer.layer_instance.bias[...]
    state = SpectralNormState(*(layer.batch_stats[("kernel", k)][...] for k in ("u", "sigma")))
    w, new = normjax.spectral_norm(kernel, state._replace(u=state.u[0]), n_power_iterations=2,
                                   train=True)
    w_eval = normjax.spectral_norm(kernel, new, n_power_iterations=2, train=False)[0]
    y = layer(x)
    stored = [layer.batch_stats[("kernel", k)][...] for k in ("u", "sigma")]
    layer.eval()
    e = layer(x)
    after_eval = [layer.batch_stats[("kernel", k)][...] for k in ("u", "sigma")]
    ours = dict(y=y, e=e, u=stored[0], sigma=stored[1], eval_u=after_eval[0],
                eval_sigma=after_eval[1], kernel=layer.layer_instance.kernel[...])
    theirs = dict(y=x @ w + bias[None], e=x @ w_eval + bias[None], u=new.u[None],
                  sigma=new.sigma, eval_u=new.u[None], eval_sigma=new.sigma, kernel=kernel)
    return ours, theirs, jnp.linalg.norm(state.u)


def test_spectral_norm_matches_its_pure_function_and_flax_state() -> None:
    ours, theirs, u_norm = jax.jit(_spectral_steps)(data((3, 4)))
    for name in ours:  # eval leaves u, sigma unchanged; the raw kernel is kept
        assert_close(ours[name], theirs[name], tol=1e-5)
    np.testing.assert_allclose(u_norm, 1.0, rtol=1e-6)
    abstract = [nnx.eval_shape(lambda cls=cls: cls(nnx.Linear(4, 5, rngs=nnx.Rngs(0)),
                                                   rngs=nnx.Rngs(1)))
                for cls in (nr.SpectralNorm, nnx.SpectralNorm)]
    flat = [{p: (type(v).__name__, v.shape) for p, v in nnx.to_flat_state(nnx.state(m))}
            for m in abstract]
    assert flat[0] == flat[1]  # flax.nnx's state layout


def test_spectral_norm_update_stats_and_higher_rank_kernels() -> None:
    x = data((2, 3, 5))
    layer = nr.SpectralNorm(general_layer(nnx.Rngs(0)), update_stats=False, rngs=nnx.Rngs(1))
    assert layer.use_running_average is True
    assert shapes(layer.batch_stats[("kernel", "u")][...]) == (1, 4)
    u0 = layer.batch_stats[("kernel", "u")][...]
    frozen, updating = (nnx.jit(lambda layer, x, flag=flag: layer(x, update_stats=flag))
                        for flag in (None, True))
    frozen(layer, x)
    np.testing.assert_array_equal(layer.batch_stats[("kernel", "u")][...], u0)
    updating(layer, x)
    assert not np.allclose(layer.batch_stats[("kernel", "u")][...], u0)
    layer.train()
    assert layer.use_running_average is False


@pytest.mark.parametrize("wrapper", ["spectral", "ws"])
def test_wrapper_gradients_reach_the_raw_kernel(wrapper: str) -> None:
    x = data((3, 4))
    if wrapper == "spectral":
        layer = nr.SpectralNorm(nnx.Linear(4, 5, rngs=nnx.Rngs(0)), update_stats=False,
                                rngs=nnx.Rngs(1))
        state = SpectralNormState(layer.batch_stats[("kernel", "u")][...][0],
                                  layer.batch_stats[("kernel", "sigma")][...])

        def transform(w: jax.Array) -> jax.Array:
            return normjax.spectral_norm(w, state, train=False)[0]
    else:
        layer = nr.WeightStandardization(nnx.Linear(4, 5, rngs=nnx.Rngs(0)))
        transform = normjax.weight_standardization
    bias = layer.layer_instance.bias[...]

    def loss(layer: nnx.Module) -> jax.Array:
        return jnp.sum(jnp.sin(layer(x)))

    def ref(kernel: jax.Array) -> jax.Array:
        return jnp.sum(jnp.sin(x @ transform(kernel) + bias[None]))

    grads = nnx.jit(nnx.grad(loss))(layer)
    expected = jax.jit(jax.grad(ref))(layer.layer_instance.kernel[...])
    assert_close(grads["layer_instance"]["kernel"][...], expected, tol=1e-5)


# --------------------------------------------------------------------------- WeightStandardization


@pytest.mark.parametrize("scaled", [False, True])
def test_weight_standardization_matches_its_pure_function(scaled: bool) -> None:
    gamma = normjax.activation_gamma(jax.nn.relu)
    x = data((2, 3, 5))

    def run(x: jax.Array) -> tuple[Any, ...]:
        layer = nr.WeightStandardization(general_layer(nnx.Rngs(0)), scaled=scaled, gamma=gamma,
                                         rngs=nnx.Rngs(1))
        perturb(layer)
        kernel = layer.layer_instance.kernel[...]
        if scaled:
            w = normjax.scaled_weight_standardization(kernel, layer.gains[("kernel",)][...],
                                                      gamma=gamma)
        else:
            w = normjax.weight_standardization(kernel)
        y = layer(x)
        reference = nnx.clone(layer.layer_instance)
        reference.kernel[...] = w
        return pure_dict(layer, nnx.Param), y, reference(x), layer.layer_instance.kernel[...]

    params, y, ref, kernel_after = jax.jit(run)(x)
    expected = {"layer_instance": {"kernel": (3, 5, 4), "bias": (4,)}}
    if scaled:
        expected["gains"] = {("kernel",): (4,)}
    assert shapes(params) == expected
    assert_close(y, ref, tol=1e-5)
    np.testing.assert_array_equal(kernel_after, params["layer_instance"]["kernel"])


# --------------------------------------------------------------------------- dropout variants

DROPOUTS = [
    (partial(nr.SpatialDropout, 0.5, channel_axis=1),
     lambda k, x: normjax.spatial_dropout(k, x, rate=0.5, train=True, channel_axis=1)),
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
        (nr.FilterResponseNorm(4, channel_axis=0, rngs=rngs), x, "also a batch axis"),
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
    with pytest.raises(ValueError, match="n_steps must be an int >= 1"):
        nr.SpectralNorm(nnx.Linear(4, 5, rngs=rngs), n_steps=0, rngs=rngs)
    with pytest.raises(ValueError, match="error_on_non_matrix=True"):
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
    with pytest.raises(ValueError, match="has no random keys"):
        nr.GaussianDropout(0.5)(x)
    with pytest.raises(ValueError, match="No `deterministic` was given to SpatialDropout"):
        nr.SpatialDropout(0.5, deterministic=None, rngs=rngs)(x)


def _no_mode_spectral(rngs: nnx.Rngs) -> nr.SpectralNorm:
    layer = nr.SpectralNorm(nnx.Linear(4, 5, rngs=rngs), rngs=rngs)
    layer.use_running_average = None
    return layer

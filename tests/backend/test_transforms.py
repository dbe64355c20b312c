"""Every norm on the backend's path under every JAX transform and sharding mode, default settings.

Each cell applies one transform to a norm and to a plain-jnp reference written here (the
textbook formulas, differentiated by JAX itself) and compares the two to float32 rounding, on
8 host devices, with the CPU kernels serving where they apply and with them off (the routing is
then the one of a machine where they are not built: ``native_available()`` false and the switch
off take the same branch in ``normjax._backend.routing``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import normjax as nj

pytestmark = pytest.mark.cpu_only

EPS = 1e-5
SHAPE = (8, 4, 4, 8)  # NHWC: the kernels' channels-last layout
BN_AXES = (0, 1, 2)
Norm = Callable[..., jax.Array]


# --- the norms, and their plain-jnp references -------------------------------------------------

def _c(a: jax.Array, x: jax.Array) -> jax.Array:
    """A per-channel vector shaped to broadcast against channels-last ``x``."""
    return a.reshape((1,) * (x.ndim - 1) + (-1,))


def _ref_standardize(x, axes, g, b, axis_name=None, center=True):
    mean = jnp.mean(x, axes, keepdims=True) if center else 0.0
    if axis_name is not None and center:
        mean = lax.pmean(mean, axis_name)
    sq = jnp.mean(jnp.square(x - mean), axes, keepdims=True)
    if axis_name is not None:
        sq = lax.pmean(sq, axis_name)
    return (x - mean) * lax.rsqrt(sq + EPS) * _c(g, x) + _c(b, x)


def _ref_group(x, g, b, groups):
    xg = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    axes = (*tuple(range(1, x.ndim - 1)), x.ndim)
    mean = jnp.mean(xg, axes, keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axes, keepdims=True)
    return ((xg - mean) * lax.rsqrt(var + EPS)).reshape(x.shape) * _c(g, x) + _c(b, x)


def _ref_ghost(x, g, b, vbs):
    spec = jax.typeof(x).sharding.spec  # an Explicit-mesh input: gathered before the split
    if any(s is not None for s in spec):
        x = jax.sharding.reshard(x, NamedSharding(jax.typeof(x).sharding.mesh, P()))
    xs = x.reshape(x.shape[0] // vbs, vbs, *x.shape[1:])
    return jax.vmap(lambda v: _ref_standardize(v, BN_AXES, g, b))(xs).reshape(x.shape)


def _ref_renorm(x, g, b, axis_name=None, r_max=3.0, d_max=5.0):
    """Batch Renormalization from the initial running statistics (mean 0, var 1)."""
    mean = jnp.mean(x, BN_AXES, keepdims=True)
    if axis_name is not None:
        mean = lax.pmean(mean, axis_name)
    var = jnp.mean(jnp.square(x - mean), BN_AXES, keepdims=True)
    if axis_name is not None:
        var = lax.pmean(var, axis_name)
    sigma_b, sigma = jnp.sqrt(var + EPS), jnp.sqrt(1.0 + EPS)
    r = lax.stop_gradient(jnp.clip(sigma_b / sigma, 1 / r_max, r_max))
    d = lax.stop_gradient(jnp.clip(mean / sigma, -d_max, d_max))
    return ((x - mean) / sigma_b * r + d) * _c(g, x) + _c(b, x)


def _vbs(x: jax.Array) -> int:
    """Ghost BN's virtual batch: 2, or 1 for a per-example call (vmap, pmap, shard_map)."""
    return min(2, x.shape[0])


def _state():
    return nj.batch_norm_init(SHAPE[-1])


NORMS: dict[str, tuple[Callable[..., Norm], Callable[..., Norm]]] = {
    # name: (norm(axis_name) -> f(x, g, b), reference(axis_name) -> f(x, g, b))
    "batch_norm": (
        lambda an=None: lambda x, g, b: nj.batch_norm(
            x, _state(), scale=g, bias=b, reduction_axes=BN_AXES, train=True, epsilon=EPS,
            axis_name=an)[0],
        lambda an=None: lambda x, g, b: _ref_standardize(x, BN_AXES, g, b, an)),
    "layer_norm": (
        lambda an=None: lambda x, g, b: nj.layer_norm(x, g, b, epsilon=EPS),
        lambda an=None: lambda x, g, b: _ref_standardize(x, -1, g, b)),
    "rms_norm": (
        lambda an=None: lambda x, g, b: nj.rms_norm(x, g, epsilon=EPS) + _c(b, x),
        lambda an=None: lambda x, g, b: _ref_standardize(x, -1, g, b, center=False)),
    "group_norm": (
        lambda an=None: lambda x, g, b: nj.group_norm(x, g, b, num_groups=2, epsilon=EPS),
        lambda an=None: lambda x, g, b: _ref_group(x, g, b, 2)),
    "instance_norm": (
        lambda an=None: lambda x, g, b: nj.instance_norm(x, g, b, epsilon=EPS),
        lambda an=None: lambda x, g, b: _ref_standardize(x, (1, 2), g, b)),
    "ghost_batch_norm": (
        lambda an=None: lambda x, g, b: nj.ghost_batch_norm(
            x, _state(), scale=g, bias=b, virtual_batch_size=_vbs(x), reduction_axes=BN_AXES,
            train=True, epsilon=EPS)[0],
        lambda an=None: lambda x, g, b: _ref_ghost(x, g, b, _vbs(x))),
    "batch_renorm": (
        lambda an=None: lambda x, g, b: nj.batch_renorm(
            x, _state(), scale=g, bias=b, reduction_axes=BN_AXES, train=True, epsilon=EPS,
            axis_name=an)[0],
        lambda an=None: lambda x, g, b: _ref_renorm(x, g, b, an)),
}
POOLING = ("batch_norm", "batch_renorm")  # the norms that take axis_name


# --- inputs and meshes ------------------------------------------------------------------------

def _inputs(batch: int = SHAPE[0]) -> tuple[jax.Array, ...]:
    rng = np.random.default_rng(0)
    shape = (batch, *SHAPE[1:])
    x = rng.standard_normal(shape) * 2 + 0.5
    c = SHAPE[-1]
    arrays = (x, 1 + 0.1 * rng.standard_normal(c), 0.1 * rng.standard_normal(c),
              rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c))
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def _mesh(kind: AxisType) -> jax.sharding.Mesh:
    return jax.make_mesh((8,), ("d",), axis_types=(kind,))


# --- the transforms: each maps f(x, g, b) to a function of the inputs -------------------------

def _loss(f: Norm, ct: jax.Array) -> Callable[..., jax.Array]:
    return lambda x, g, b: jnp.sum(f(x, g, b) * ct)


def _grad(f, x, g, b, ct, *_):
    return jax.grad(_loss(f, ct), (0, 1, 2))(x, g, b)


def _jvp(f, x, g, b, ct, tg, tb):
    return jax.jvp(f, (x, g, b), (ct, tg, tb))


def _scan(f, x, g, b, ct, *_):
    def step(g, xs):
        x, ct = xs
        dg = jax.grad(_loss(f, ct), 1)(x, g, b)
        return g - 0.1 * dg, jnp.sum(f(x, g, b))

    xs = (x.reshape(2, -1, *x.shape[1:]), ct.reshape(2, -1, *ct.shape[1:]))
    return lax.scan(step, g, xs)


def _ensemble(f, x, g, b, ct, tg, tb):
    """Two members with their own parameters: vmap over grad (seeds in the runner)."""
    stack = lambda a, t: jnp.stack([a, a + 0.5 * t])  # noqa: E731
    return jax.vmap(partial(_grad, f))(stack(x, ct), stack(g, tg), stack(b, tb),
                                       stack(ct, ct))


def _per_example(f, x, g, b, ct, *_):
    """grad of a loss over per-example norms (vmap inside grad): the tangent's batching."""
    loss = lambda x, g, b: jnp.sum(jax.vmap(f, (0, None, None))(x[:, None], g, b)[:, 0] * ct)  # noqa: E731
    return jax.grad(loss, (0, 1, 2))(x, g, b)


def _shard_map(f, x, g, b, ct, *_):
    mesh = _mesh(AxisType.Auto)
    return jax.shard_map(f, mesh=mesh, in_specs=(P("d"), P(), P()), out_specs=P("d"))(x, g, b)


def _shard_map_grad(f, x, g, b, ct, *_):
    return jax.grad(lambda x, g, b: jnp.sum(_shard_map(f, x, g, b, ct) * ct), (0, 1, 2))(x, g, b)


TRANSFORMS: dict[str, Callable[..., Any]] = {
    "jit": lambda f, x, g, b, *_: f(x, g, b),
    "grad": _grad,  # every cell runs under an outer jax.jit: this is jit(grad)
    "jvp": _jvp,
    "jvp_jit": lambda f, *a: _jvp(jax.jit(f), *a),
    "linearize": lambda f, x, g, b, ct, tg, tb: jax.linearize(f, x, g, b)[1](ct, tg, tb),
    "jacfwd": lambda f, x, g, b, *_: jax.jacfwd(lambda x: jnp.sum(f(x, g, b), (1, 2)))(x[:2]),
    "jacrev": lambda f, x, g, b, *_: jax.jacrev(lambda x: jnp.sum(f(x, g, b), (1, 2)))(x[:2]),
    "hessian": lambda f, x, g, b, ct, *_: jax.hessian(
        lambda g: jnp.sum(f(x, g, b) ** 3 * ct))(g),
    "hvp": lambda f, x, g, b, ct, tg, tb: jax.jvp(
        lambda x, g: jax.grad(_loss(f, ct), (0, 1))(x, g, b), (x, g), (ct, tg))[1],
    "vmap_ensemble": _ensemble,
    "grad_of_vmap": _per_example,
    "scan": _scan,
    "remat_grad": lambda f, *a: _grad(jax.checkpoint(f), *a),
    "shard_map": _shard_map,
    "shard_map_grad": _shard_map_grad,
    "pmap": lambda f, x, g, b, *_: jax.pmap(f, in_axes=(0, None, None))(x[:, None], g, b),
}
def _value_and_grad(f, x, g, b, ct, *_):
    return f(x, g, b), _grad(f, x, g, b, ct)


SHARDED = {  # jit of the value and of grad on inputs placed on an 8-device mesh of that kind
    "explicit": AxisType.Explicit,
    "auto": AxisType.Auto,
}


def _assert_close(got: Any, want: Any, rtol: float = 2e-4) -> None:
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for a, w in zip(got_leaves, want_leaves, strict=True):
        a, w = np.asarray(a, np.float64), np.asarray(w, np.float64)
        assert a.shape == w.shape
        np.testing.assert_allclose(a, w, rtol=rtol, atol=rtol * max(1.0, np.abs(w).max()))


def _cell(norm: str, transform: Callable[..., Any], kernels: bool, inputs: tuple,
          axis_name: str | None = None, outer_jit: bool = True) -> None:
    make, make_ref = NORMS[norm]
    f, ref = make(axis_name), make_ref(axis_name)

    def both(*a):
        return transform(f, *a), transform(ref, *a)

    with nj.use_native_kernels(kernels):
        got, want = (jax.jit(both) if outer_jit else both)(*inputs)
    _assert_close(got, want)


KERNELS = pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "xla"])


@KERNELS
@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("norm", list(NORMS))
def test_transform(norm: str, transform: str, kernels: bool) -> None:
    _cell(norm, TRANSFORMS[transform], kernels, _inputs(), outer_jit=transform != "pmap")


@KERNELS
@pytest.mark.parametrize("mode", list(SHARDED))
@pytest.mark.parametrize("norm", list(NORMS))
def test_sharded_inputs(norm: str, mode: str, kernels: bool) -> None:
    mesh = _mesh(SHARDED[mode])
    x, g, b, ct, tg, tb = _inputs()
    batch = NamedSharding(mesh, P("d"))
    inputs = (jax.device_put(x, batch), g, b, jax.device_put(ct, batch), tg, tb)
    _cell(norm, _value_and_grad, kernels, inputs)


# --- statistics pooled across a named axis (the BatchNorm family) ----------------------------

def _vmap_pooled(f, x, g, b, ct, *_):
    """Members of a vmap with axis_name pool their statistics: the whole batch's BN."""
    per = lambda x, ct: _loss(f, ct)(x, g, b)  # noqa: E731
    split = lambda a: a.reshape(4, -1, *a.shape[1:])  # noqa: E731
    value = jax.vmap(f, (0, None, None), axis_name="i")(split(x), g, b)
    grads = jax.grad(lambda x: jnp.sum(jax.vmap(per, axis_name="i")(split(x), split(ct))))(x)
    return value, grads


def _shard_map_pooled(f, x, g, b, ct, *_):
    mesh = _mesh(AxisType.Auto)
    sm = jax.shard_map(f, mesh=mesh, in_specs=(P("d"), P(), P()), out_specs=P("d"))
    return sm(x, g, b), jax.grad(lambda x, g, b: jnp.sum(sm(x, g, b) * ct), (0, 1, 2))(x, g, b)


def _pmap_pooled(f, x, g, b, *_):
    return jax.pmap(f, in_axes=(0, None, None), axis_name="i")(x[:, None], g, b)


POOLED = {"vmap": ("i", _vmap_pooled, True), "shard_map": ("d", _shard_map_pooled, True),
          "pmap": ("i", _pmap_pooled, False)}


@KERNELS
@pytest.mark.parametrize("transform", list(POOLED))
@pytest.mark.parametrize("norm", POOLING)
def test_axis_name_pools_statistics(norm: str, transform: str, kernels: bool) -> None:
    axis_name, fn, outer_jit = POOLED[transform]
    _cell(norm, fn, kernels, _inputs(), axis_name=axis_name, outer_jit=outer_jit)

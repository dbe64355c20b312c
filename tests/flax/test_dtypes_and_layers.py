"""Input dtypes as flax's norms treat them, and the Flax layers under transforms and sharding.

Integer and bool inputs are promoted to float, complex inputs are normalized with
``E[|x - mu|^2]``, float64 stays float64 (``jax_enable_x64``), bfloat16 keeps float32 statistics:
values and output dtypes equal those of ``flax.linen``'s layers with the same settings.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import normjax as nj
from normjax import linen as njl
from normjax import nnx as njnnx

LAYERS: dict[str, dict[str, Any]] = {
    "LayerNorm": {}, "RMSNorm": {}, "GroupNorm": {"num_groups": 2}, "InstanceNorm": {},
    "BatchNorm": {"use_running_average": False},
}


def _base() -> np.ndarray:
    return np.arange(32).reshape(2, 2, 2, 4) % 7 - 3


DTYPES = {
    "int32": lambda: jnp.asarray(_base(), jnp.int32),
    "bool": lambda: jnp.asarray(_base() > 0),
    "complex64": lambda: jnp.asarray(_base() * (1 - 0.5j) + np.roll(_base(), 1) * 2j,
                                     jnp.complex64),
    "bfloat16": lambda: jnp.asarray(_base() / 3, jnp.bfloat16),
}


def _apply(lib: Any, name: str, x: jax.Array) -> jax.Array:
    layer = getattr(lib, name)(**LAYERS[name])
    variables = layer.init(jax.random.key(0), x)
    return layer.apply(variables, x, mutable=["batch_stats"])[0]


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_linen_layers_treat_dtypes_as_flax(dtype: str, name: str) -> None:
    x = DTYPES[dtype]()
    with jax.numpy_dtype_promotion("standard"):  # flax's own promotion of int inputs needs it
        ours, theirs = _apply(njl, name, x), _apply(fnn, name, x)
    assert ours.dtype == theirs.dtype
    np.testing.assert_allclose(np.asarray(ours, np.complex128), np.asarray(theirs, np.complex128),
                               rtol=2e-3, atol=2e-3)


def test_pure_functions_promote_integers_and_keep_complex() -> None:
    y = nj.layer_norm(jnp.arange(8).reshape(2, 4))
    assert y.dtype == jnp.float32  # was truncated back to int32: [-1 0 0 1]
    np.testing.assert_allclose(y[0], np.array([-3, -1, 1, 3]) / np.sqrt(5), rtol=1e-4)
    z = jnp.asarray([[1 + 1j, -1 - 1j, 2j, -2j]], jnp.complex64)
    out = nj.layer_norm(z, epsilon=0.0)
    assert out.dtype == jnp.complex64
    # mean 0, E|z|^2 = (2 + 2 + 4 + 4) / 4 = 3
    np.testing.assert_allclose(out, np.asarray(z) / np.sqrt(3), rtol=1e-6)
    g = jax.grad(lambda x: jnp.sum(nj.layer_norm(x) ** 2 * jnp.arange(4.0)[None]))(
        jnp.arange(8.0).reshape(2, 4))
    assert g.dtype == jnp.float32


_X64 = """
import jax, jax.numpy as jnp, numpy as np, flax.linen as fnn, normjax as nj
from normjax import linen as njl
jax.config.update("jax_enable_x64", True)
x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 8)) * 3 + 1e3, jnp.float64)
for name, kw in [("LayerNorm", {}), ("GroupNorm", {"num_groups": 2}), ("RMSNorm", {}),
                 ("BatchNorm", {"use_running_average": False})]:
    outs = []
    for lib in (njl, fnn):
        layer = getattr(lib, name)(**kw)  # jitted: a few compilations, not one per op
        v = jax.jit(layer.init)(jax.random.key(0), x)
        outs.append(jax.jit(lambda v, x: layer.apply(v, x, mutable=["batch_stats"])[0])(v, x))
    assert outs[0].dtype == outs[1].dtype == jnp.float64, name
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-9, atol=1e-9)
grad = jax.jit(jax.grad(lambda x: jnp.sum(nj.layer_norm(x) * x)))
tangent = jax.jit(lambda x: jax.jvp(nj.layer_norm, (x,), (x,))[1])
g, t = grad(x), tangent(x)
assert g.dtype == t.dtype == jnp.float64
with nj.use_fused_backward(False):  # JAX's autodiff of moments + standardize
    t_ref = jax.jit(lambda x: jax.jvp(nj.layer_norm, (x,), (x,))[1])(x)
    g_ref = jax.jit(jax.grad(lambda x: jnp.sum(nj.layer_norm(x) * x)))(x)
# d/de LN((1 + e) x) at e = 0 is epsilon's share only (~1e-7): float64 keeps its digits
np.testing.assert_allclose(t, t_ref, rtol=1e-4, atol=1e-10)  # float32 would be off by ~1e-4
np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-10)
print("ok")
"""


def test_float64_stays_float64_under_x64() -> None:
    done = subprocess.run([sys.executable, "-c", _X64], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


# --- the Flax layers under transforms and sharding -------------------------------------------

def _x() -> jax.Array:
    return jnp.asarray(np.random.default_rng(1).standard_normal((8, 4, 4, 8)) * 2 + 1,
                       jnp.float32)


def _linen_fn(lib: Any, name: str) -> Any:
    layer = getattr(lib, name)(**LAYERS[name])
    variables = layer.init(jax.random.key(0), _x())
    return lambda x: layer.apply(variables, x, mutable=["batch_stats"])[0]


def _mesh(kind: AxisType) -> jax.sharding.Mesh:
    return jax.make_mesh((8,), ("d",), axis_types=(kind,))


LINEN_TRANSFORMS = {
    "grad": lambda f, x: jax.grad(lambda x: jnp.sum(f(x) ** 2))(x),
    "jvp": lambda f, x: jax.jvp(f, (x,), (jnp.cos(x),)),
    "shard_map": lambda f, x: jax.shard_map(f, mesh=_mesh(AxisType.Auto), in_specs=P("d"),
                                            out_specs=P("d"))(x),
    "explicit": lambda f, x: jax.grad(lambda x: jnp.sum(f(x) ** 2))(
        jax.device_put(x, NamedSharding(_mesh(AxisType.Explicit), P("d")))),
}


@pytest.mark.cpu_only
@pytest.mark.parametrize("transform", list(LINEN_TRANSFORMS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_linen_layers_under_transforms_equal_flax(name: str, transform: str) -> None:
    t = LINEN_TRANSFORMS[transform]
    x = _x()
    got = jax.jit(lambda x: t(_linen_fn(njl, name), x))(x)
    want = jax.jit(lambda x: t(_linen_fn(fnn, name), x))(x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * max(1.0, float(jnp.abs(b).max())))


def test_linen_vmap_and_nnx_vmap_with_forward_mode() -> None:
    x = _x()
    vm = fnn.vmap(njl.LayerNorm, variable_axes={"params": 0}, split_rngs={"params": True},
                  in_axes=0)()
    v = vm.init(jax.random.key(0), x)
    _y, y_dot = jax.jvp(lambda x: vm.apply(v, x), (x,), (x,))
    np.testing.assert_allclose(y_dot, 0.0, atol=1e-4)  # LN(x + e x) == LN(x)

    @nnx.vmap(in_axes=(None, 0))
    def apply(model: njnnx.BatchNorm, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jax.jvp(lambda x: model(x), (x,), (x,))

    model = njnnx.BatchNorm(8, use_running_average=True, rngs=nnx.Rngs(0))
    _out, out_dot = apply(model, x)
    np.testing.assert_allclose(out_dot, x / np.sqrt(1 + 1e-5), rtol=1e-5)
    ln = njnnx.LayerNorm(8, rngs=nnx.Rngs(0))
    ours = jax.jvp(ln, (x,), (jnp.cos(x),))
    theirs = jax.jvp(nnx.LayerNorm(8, rngs=nnx.Rngs(0)), (x,), (jnp.cos(x),))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", ["LayerNorm", "BatchNorm"])
def test_nnx_layers_under_shard_map_and_explicit_sharding_equal_flax(name: str) -> None:
    x = _x()
    # (NNX's own BatchNorm cannot update its statistics from inside these traces: eval mode)
    kw = {"use_running_average": True} if name == "BatchNorm" else {}

    def run(lib: Any) -> Any:
        model = getattr(lib, name)(8, rngs=nnx.Rngs(0), **kw)
        graphdef, state = nnx.split(model)

        def f(x: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, state)(x)

        per_member = jax.shard_map(f, mesh=_mesh(AxisType.Auto), in_specs=P("d"),
                                   out_specs=P("d"))
        sharded = jax.device_put(x, NamedSharding(_mesh(AxisType.Explicit), P("d")))
        return jax.jit(lambda x, xs: (per_member(x), jax.grad(lambda v: jnp.sum(f(v) ** 2))(xs)))(
            x, sharded)

    for a, b in zip(jax.tree.leaves(run(njnnx)), jax.tree.leaves(run(nnx)), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * max(1.0, float(jnp.abs(b).max())))

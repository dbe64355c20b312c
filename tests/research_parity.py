"""Helpers shared by the tests of normjax's research layers (linen and NNX)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

KEY = jax.random.key(0)
F32, BF16 = jnp.float32, jnp.bfloat16
#: A linen layer whose kernel has rank 3 (two contracted axes), for the spectral-norm tests.
GENERAL = partial(fnn.DenseGeneral, 4, axis=(-2, -1))


def data(shape: tuple[int, ...], seed: int = 1, dtype: Any = F32) -> jax.Array:
    """Normal data with mean 0.5 and std 2 (NumPy-generated: no compilation per shape)."""
    x = np.random.default_rng(seed).normal(0.5, 2.0, size=shape).astype(np.float32)
    return jnp.asarray(x).astype(dtype)


def perturbed(tree: Any, key: jax.Array = KEY) -> Any:
    """Every leaf plus N(0, 0.5^2) noise, so that forwarding each parameter is tested."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noisy = [p + 0.5 * jax.random.normal(k, jnp.shape(p), jnp.result_type(p))
             for p, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, noisy)


def traced(fn: Callable[..., Any], *args: Any) -> Any:
    """``jax.jit(fn)(*args)``: errors raise while tracing, without eager compilations."""
    return jax.jit(fn)(*args)


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


def bn_shapes(c: int, **params: tuple[int, ...]) -> dict[str, Any]:
    return {"params": {"scale": (c,), "bias": (c,), **params},
            "batch_stats": {"mean": (c,), "var": (c,), "count": (c,)}}


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


def general_layer(rngs: nnx.Rngs) -> nnx.LinearGeneral:
    """A layer with a rank-3 ``(..., in, out)`` kernel, a conv kernel's layout (fast to
    compile)."""
    return nnx.LinearGeneral((3, 5), 4, axis=(-2, -1), rngs=rngs)

"""Helpers shared by the tests that compare normjax's Flax layers with flax's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx as fx
from flax.traverse_util import flatten_dict

import normjax.nnx as nx

F32, BF16 = jnp.float32, jnp.bfloat16
KEY = jax.random.key(0)


def standard(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs flax code under standard promotion (flax mixes bfloat16 and float32)."""
    with jax.numpy_dtype_promotion("standard"):
        return fn(*args, **kwargs)


def jitted(fn: Callable[..., Any], *args: Any, flax: bool = False) -> Any:
    """``jax.jit(fn)(*args)``: one compilation instead of one per eager op; ``flax=True``
    traces under standard promotion."""
    if flax:
        return standard(jax.jit(fn), *args)
    return jax.jit(fn)(*args)


def data(shape: tuple[int, ...], dtype: Any = F32, seed: int = 1) -> jax.Array:
    """Normal data with mean 0.5 and std 2 (NumPy-generated: no compilation per shape)."""
    x = np.random.default_rng(seed).normal(0.5, 2.0, size=shape).astype(np.float32)
    return jnp.asarray(x).astype(dtype)


def assert_close(ours: Any, theirs: Any) -> None:
    """Same shape and dtype; values within 1e-5 (float32) or 2e-2 (bfloat16)."""
    ours, theirs = jnp.asarray(ours), jnp.asarray(theirs)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (ours, theirs)
    tol = 2e-2 if ours.dtype == BF16 else 1e-5
    np.testing.assert_allclose(
        np.asarray(ours, np.float32), np.asarray(theirs, np.float32), rtol=tol, atol=tol
    )


# linen
def apply(module: fnn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module.apply`` compiled once (keyword arguments are static)."""
    return jitted(lambda *a: module.apply(*a, **kwargs), *args)


def init(module: fnn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module.init(KEY, ...)`` compiled once (keyword arguments are static)."""
    return jitted(lambda *a: module.init(KEY, *a, **kwargs), *args)


def assert_same_variables(ours: Any, theirs: Any, *, extra: tuple[str, ...] = ()) -> None:
    """Same names, shapes, dtypes and values; ``ours`` may add leaves named in ``extra``."""
    flat_ours, flat_theirs = flatten_dict(dict(ours)), flatten_dict(dict(theirs))
    added = set(flat_ours) - set(flat_theirs)
    assert all(path[-1] in extra for path in added), added
    assert set(flat_theirs) <= set(flat_ours), set(flat_theirs) - set(flat_ours)
    for path, value in flat_theirs.items():
        assert_close(flat_ours[path], value)


def batch_stats_count(variables: Any) -> np.ndarray:
    return np.asarray(flatten_dict(dict(variables["batch_stats"]))[("count",)])


def flax_exact(nn: Any) -> dict[str, Any]:
    """flax's settings that match normjax's defaults exactly (its stable variance)."""
    return {"use_fast_variance": False} if nn is fnn else {}


# nnx
def flat(state: Any) -> dict[tuple[Any, ...], tuple[str, jax.Array]]:
    """``{path: (variable type, value)}``; plain arrays get the type name ``"array"``."""
    out = {}
    for path, leaf in nx.to_flat_state(state):
        is_var = isinstance(leaf, fx.Variable)
        out[path] = (type(leaf).__name__ if is_var else "array", leaf[...] if is_var else leaf)
    return out


def assert_same_state(ours: Any, theirs: Any, *, extra: tuple[str, ...] = ()) -> None:
    flat_ours, flat_theirs = flat(ours), flat(theirs)
    added = set(flat_ours) - set(flat_theirs)
    assert all(path[-1] in extra for path in added), added
    assert set(flat_theirs) <= set(flat_ours), set(flat_theirs) - set(flat_ours)
    for path, (kind, value) in flat_theirs.items():
        assert flat_ours[path][0] == kind, path
        assert_close(flat_ours[path][1], value)

"""The public API's conventions: one axis vocabulary, scale/bias passed the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import normjax as nj

X = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 3, 6)), jnp.float32)
C = jnp.ones(6) * 0.5
KEY = jax.random.key(0)

# (name, call with feature_axes given by the keyword passed in)
RENAMED: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("group_norm", lambda kw: nj.group_norm(X, num_groups=2, **kw)),
    ("filter_response_norm", lambda kw: nj.filter_response_norm(X, **kw)),
    ("tlu", lambda kw: nj.tlu(X, C, **kw)),
    ("frn_tlu", lambda kw: nj.frn_tlu(X, C, C, C, **kw)),
    ("evonorm_b0", lambda kw: nj.evonorm_b0(X, nj.batch_norm_init(6), v=C, train=True, **kw)),
    ("evonorm_s0", lambda kw: nj.evonorm_s0(X, v=C, num_groups=2, **kw)),
    ("switchable_norm", lambda kw: nj.switchable_norm(
        X, nj.batch_norm_init(6), mean_logits=jnp.zeros(3), var_logits=jnp.zeros(3), train=True,
        **kw)),
    ("decorrelated_batch_norm", lambda kw: nj.decorrelated_batch_norm(
        X, nj.whitening_init(6, group_size=2), train=True, **kw)),
    ("spatial_dropout", lambda kw: nj.spatial_dropout(KEY, X, rate=0.5, train=True, **kw)),
]


@pytest.mark.parametrize(("name", "call"), RENAMED, ids=[r[0] for r in RENAMED])
def test_channel_axis_is_the_deprecated_name_of_feature_axes(name: str, call: Callable) -> None:
    want = call({"feature_axes": -1})
    with pytest.warns(DeprecationWarning, match=rf"{name}\(channel_axis=\.\.\.\) is deprecated: "
                                                r"use feature_axes="):
        got = call({"channel_axis": -1})
    jax.tree.map(np.testing.assert_array_equal, got, want)
    with pytest.raises(TypeError, match="pass feature_axes= only"):
        call({"channel_axis": -1, "feature_axes": -1})


def test_single_axis_norms_say_so() -> None:
    with pytest.raises(ValueError, match=r"feature_axes=\(1, 3\) names 2 axes; this norm takes "
                                         r"its features on one axis"):
        nj.group_norm(X, num_groups=2, feature_axes=(1, 3))


def test_scale_and_bias_are_positional_in_every_norm() -> None:
    """``norm(x, [state,] scale, bias, ...)``: the same values as by keyword."""
    state = nj.batch_norm_init(6)
    axes = (0, 1, 2)
    pairs = [
        (nj.batch_norm(X, state, C, C, reduction_axes=axes, train=True),
         nj.batch_norm(X, state, scale=C, bias=C, reduction_axes=axes, train=True)),
        (nj.ghost_batch_norm(X, state, C, C, virtual_batch_size=2, reduction_axes=axes,
                             train=True),
         nj.ghost_batch_norm(X, state, scale=C, bias=C, virtual_batch_size=2,
                             reduction_axes=axes, train=True)),
        (nj.batch_renorm(X, state, C, C, reduction_axes=axes, train=True),
         nj.batch_renorm(X, state, scale=C, bias=C, reduction_axes=axes, train=True)),
        (nj.layer_norm(X, C, C), nj.layer_norm(X, scale=C, bias=C)),
        (nj.group_norm(X, C, C, num_groups=2), nj.group_norm(X, scale=C, bias=C, num_groups=2)),
        (nj.instance_norm(X, C, C), nj.instance_norm(X, scale=C, bias=C)),
    ]
    for positional, keyword in pairs:
        jax.tree.map(np.testing.assert_array_equal, positional, keyword)


def _linen(layer: Callable[..., Any], *args: Any, **rest: Any) -> Callable[[dict], Any]:
    def call(kw: dict[str, Any]) -> Any:
        module = layer(*args, **rest, **kw)
        variables = module.init({"params": KEY, "dropout": KEY}, X)
        return module.apply(variables, X, rngs={"dropout": KEY}, mutable=["batch_stats"])
    return call


def _nnx(layer: Callable[..., Any], *args: Any, **rest: Any) -> Callable[[dict], Any]:
    from flax import nnx
    return lambda kw: layer(*args, **rest, **kw, rngs=nnx.Rngs(0, dropout=0))(X)


def _layers() -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    import normjax.linen as nl
    import normjax.nnx as nn_
    return [
        ("FilterResponseNorm", _linen(nl.FilterResponseNorm)),
        ("EvoNormS0", _linen(nl.EvoNormS0, num_groups=2)),
        ("EvoNormB0", _linen(nl.EvoNormB0, use_running_average=False)),
        ("SwitchableNorm", _linen(nl.SwitchableNorm, use_running_average=False)),
        ("DecorrelatedBatchNorm", _linen(nl.DecorrelatedBatchNorm, group_size=2,
                                         use_running_average=False)),
        ("SpatialDropout", _linen(nl.SpatialDropout, 0.5, deterministic=False)),
        ("FilterResponseNorm", _nnx(nn_.FilterResponseNorm, 6)),
        ("EvoNormS0", _nnx(nn_.EvoNormS0, 6, num_groups=2)),
        ("EvoNormB0", _nnx(nn_.EvoNormB0, 6, use_running_average=False)),
        ("SwitchableNorm", _nnx(nn_.SwitchableNorm, 6, use_running_average=False)),
        ("DecorrelatedBatchNorm", _nnx(nn_.DecorrelatedBatchNorm, 6, group_size=2,
                                       use_running_average=False)),
        ("SpatialDropout", _nnx(nn_.SpatialDropout, 0.5)),
    ]


@pytest.mark.parametrize("index", range(12), ids=lambda i: ("linen", "nnx")[i // 6] + str(i % 6))
def test_layers_take_channel_axis_as_the_deprecated_name_of_feature_axes(index: int) -> None:
    name, call = _layers()[index]
    want = call({"feature_axes": 3})
    with pytest.warns(DeprecationWarning, match=rf"{name}\(channel_axis=\.\.\.\) is deprecated"):
        got = call({"channel_axis": 3})
    jax.tree.map(np.testing.assert_array_equal, got, want)
    with pytest.raises(TypeError, match="pass feature_axes= only"):
        call({"channel_axis": 3, "feature_axes": 1})

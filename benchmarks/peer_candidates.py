"""equinox and haiku counterparts of the benchmark cases, used only when the library is installed.

Both are JAX libraries: their candidates join the same interleaved rounds as the normjax and flax
candidates, jitted and differentiated the same way (``(x, scale, bias) -> y``, BatchNorm
``-> (y, state)``). Each uses its library's own layer and conventions:

* equinox: layers act on one example and are ``jax.vmap``-ped over the batch (BatchNorm with an
  ``axis_name``, ``mode="batch"``: batch statistics in training). Its GroupNorm and BatchNorm take
  the channels *first* in an example, so the channels-last image cases have no equinox candidate
  (as channels-first GroupNorm has no flax one); InstanceNorm is its GroupNorm with one group per
  channel. ``scale`` and ``bias`` are put into the layer with ``eqx.tree_at``.
* haiku: layers inside ``hk.transform`` (``transform_with_state`` for BatchNorm), with
  ``data_format`` for channels-first cases and ``scale``/``offset`` passed to the call (RMSNorm,
  which takes no such argument, gets ``scale`` as its parameter).

``NORMJAX_BENCH_PEERS=0`` (``--no-peers``) skips both.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.candidates import BN_DECAY, NUM_GROUPS, Case, Norm

__all__ = ["PEERS", "peer_available", "peer_candidate", "peer_versions"]

PEERS = {"equinox": "equinox", "haiku": "haiku"}  # candidate name -> module to import
_DISTRIBUTIONS = {"equinox": "equinox", "haiku": "dm-haiku"}  # candidate name -> pip package


def peer_available(name: str) -> bool:
    """Whether candidate ``name`` (a key of :data:`PEERS`) runs: its library is importable
    (checked without importing it) and ``NORMJAX_BENCH_PEERS`` is not ``0``."""
    if os.environ.get("NORMJAX_BENCH_PEERS") == "0":
        return False
    return importlib.util.find_spec(PEERS[name]) is not None


def peer_versions() -> dict[str, str]:
    """Each candidate's installed library version, or ``skipped`` where it does not run."""
    return {name: importlib.metadata.version(_DISTRIBUTIONS[name]) if peer_available(name)
            else "skipped" for name in PEERS}


def _channels_first(case: Case) -> bool:
    """Whether the channel axis directly follows the batch axis (2-D inputs included)."""
    return case.channel_axis % len(case.shape) == 1


def _per_example(layer: Callable[[jax.Array], jax.Array], x: jax.Array, keep: int) -> jax.Array:
    """``layer`` applied to each ``keep``-dimensional trailing slice of ``x`` (one vmap)."""
    lead = x.shape[: x.ndim - keep]
    flat = x.reshape((-1, *x.shape[x.ndim - keep:]))
    return jax.vmap(layer)(flat).reshape((*lead, *flat.shape[1:]))


def _equinox(case: Case) -> Norm | None:
    import equinox as eqx

    eps, c, nd = case.epsilon, case.channels, len(case.shape)
    if case.kind in ("layer", "rms"):
        cls = eqx.nn.LayerNorm if case.kind == "layer" else eqx.nn.RMSNorm
        layer = cls(c, eps=eps, use_bias=case.kind == "layer")

        def rows(x: jax.Array, s: jax.Array, b: jax.Array) -> jax.Array:
            params = (s, b) if case.kind == "layer" else s
            where = (lambda m: (m.weight, m.bias)) if case.kind == "layer" else (lambda m: m.weight)
            return _per_example(eqx.tree_at(where, layer, params), x, 1)

        return rows
    if not _channels_first(case):
        return None
    if case.kind in ("group", "instance"):
        groups = NUM_GROUPS if case.kind == "group" else c
        layer = eqx.nn.GroupNorm(groups, c, eps=eps)
        return lambda x, s, b: _per_example(
            eqx.tree_at(lambda m: (m.weight, m.bias), layer, (s, b)), x, nd - 1)
    layer, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
        c, "batch", eps=eps, momentum=BN_DECAY, mode="batch")

    def batch(x: jax.Array, s: jax.Array, b: jax.Array) -> tuple[jax.Array, Any]:
        m = eqx.tree_at(lambda m: (m.weight, m.bias), layer, (s, b))
        return jax.vmap(m, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)

    return batch


def _haiku(case: Case) -> Norm | None:
    import haiku as hk

    eps, c, nd = case.epsilon, case.channels, len(case.shape)
    first = _channels_first(case) and nd > 2
    fmt = "channels_first" if first else "channels_last"
    view = (c,) + (1,) * (nd - 2) if first else (c,)  # scale, offset against one example
    if case.kind == "rms":
        f = hk.without_apply_rng(hk.transform(lambda x: hk.RMSNorm(-1, eps=eps)(x)))
        return lambda x, s, b: f.apply({"rms_norm": {"scale": s}}, x)
    if case.kind == "batch":
        stats = tuple(c if i == case.channel_axis % nd else 1 for i in range(nd))  # keepdims
        fb = hk.without_apply_rng(hk.transform_with_state(
            lambda x, s, b: hk.BatchNorm(False, False, BN_DECAY, eps, data_format=fmt)(
                x, True, scale=s.reshape(stats), offset=b.reshape(stats))))
        x0, p0 = jnp.zeros(case.shape, case.dtype), jnp.zeros((c,), jnp.float32)
        with jax.numpy_dtype_promotion("standard"):
            _, state = jax.eval_shape(fb.init, jax.random.key(0), x0, p0, p0)
        state = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), state)
        return lambda x, s, b: fb.apply({}, state, x, s, b)
    make = {"layer": lambda: hk.LayerNorm(-1, False, False, eps=eps),
            "group": lambda: hk.GroupNorm(NUM_GROUPS, create_scale=False, create_offset=False,
                                          eps=eps, data_format=fmt),
            "instance": lambda: hk.InstanceNorm(False, False, eps=eps, data_format=fmt)}
    f = hk.without_apply_rng(hk.transform(
        lambda x, s, b: make[case.kind]()(x, s.reshape(view), b.reshape(view))))
    return lambda x, s, b: f.apply({}, x, s, b)


def peer_candidate(name: str, case: Case) -> Norm | None:
    """Candidate ``name`` (``"equinox"`` or ``"haiku"``) for ``case``, or ``None`` where the
    library has no matching layer for the layout. Runs under standard dtype promotion (the
    libraries mix float32 parameters with bfloat16 inputs), as the flax candidate does."""
    fn = (_equinox if name == "equinox" else _haiku)(case)
    if fn is None:
        return None

    def promoted(x: jax.Array, s: jax.Array, b: jax.Array) -> Any:
        with jax.numpy_dtype_promotion("standard"):
            return fn(x, s, b)

    return promoted

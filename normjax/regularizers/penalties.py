"""L1, L2 and elastic-net penalties over parameter pytrees.

These are *coupled* penalties, added to the loss and differentiated with it::

    l1_penalty(params) = sum |w|
    l2_penalty(params) = 1/2 * sum w^2          (gradient: w)
    elastic_net_penalty(params, l1=a, l2=b) = a * l1_penalty + b * l2_penalty

With plain SGD, ``loss + lam * l2_penalty`` is the same update as weight decay; with adaptive
optimizers (Adam) it is not: the penalty's gradient is rescaled by the optimizer's
preconditioner, whereas optax's ``add_decayed_weights`` (AdamW, Loshchilov & Hutter 2019)
adds ``lam * w`` to the *update* after the preconditioning (decoupled weight decay).

By default only leaves with ``ndim >= 2`` (kernels) are penalized; biases and normalization
scales (``ndim < 2``) are left out, as is customary. Sums run in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from normjax._typing import PyTree

__all__ = ["default_penalty_mask", "elastic_net_penalty", "l1_penalty", "l2_penalty"]

Mask = PyTree | Callable[[PyTree], PyTree] | None


def default_penalty_mask(params: PyTree) -> PyTree:
    """``True`` for leaves with ``ndim >= 2`` (kernels), ``False`` for biases and scales."""
    return jax.tree_util.tree_map(lambda p: jnp.ndim(p) >= 2, params)


def _selected(params: PyTree, mask: Mask) -> list[jax.Array]:
    if mask is None:
        mask = default_penalty_mask
    if callable(mask):
        mask = mask(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    try:
        flags = treedef.flatten_up_to(mask)
    except (ValueError, TypeError) as e:
        raise ValueError(
            "mask must have the same tree structure as params (one bool per leaf), or be a "
            f"callable that returns one: {e}"
        ) from None
    for flag in flags:
        if not isinstance(flag, (bool, jnp.bool_)) and not (
            hasattr(flag, "dtype") and flag.dtype == bool and jnp.ndim(flag) == 0
        ):
            raise TypeError(f"mask leaves must be Python or scalar bools, got {flag!r}.")
    return [jnp.asarray(p) for p, f in zip(leaves, flags, strict=True) if bool(f)]


def _total(terms: list[jax.Array]) -> jax.Array:
    return sum(terms, jnp.zeros((), jnp.float32))


def l1_penalty(params: PyTree, *, mask: Mask = None) -> jax.Array:
    """``sum |w|`` over the selected leaves (float32 scalar)."""
    return _total([jnp.sum(jnp.abs(p.astype(jnp.float32))) for p in _selected(params, mask)])


def l2_penalty(params: PyTree, *, mask: Mask = None) -> jax.Array:
    """``1/2 * sum w^2`` over the selected leaves (float32 scalar)."""
    terms = [0.5 * jnp.sum(jnp.square(p.astype(jnp.float32))) for p in _selected(params, mask)]
    return _total(terms)


def elastic_net_penalty(
    params: PyTree, *, l1: float | jax.Array, l2: float | jax.Array, mask: Mask = None
) -> jax.Array:
    """``l1 * sum |w| + l2 * 1/2 * sum w^2`` (Zou & Hastie, 2005)."""
    for name, value in (("l1", l1), ("l2", l2)):
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}.")
    return l1 * l1_penalty(params, mask=mask) + l2 * l2_penalty(params, mask=mask)

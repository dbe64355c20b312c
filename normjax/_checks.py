"""Axes, shapes and argument checks shared by the statistics core and the norms.

Re-exported from :mod:`normjax.stats`; every check raises an error that says what was wrong and
how to fix it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src import core as jax_core  # only to name the bound axes in an error message
from jax.experimental import checkify

from normjax._typing import Array, ArrayLike, Axes, AxisName

__all__ = ["broadcast_mask", "canonicalize_axes", "channel_axes", "check_axis_name",
           "check_epsilon", "check_reduction", "check_train", "complement_axes",
           "deprecated_name", "feature_shape", "is_traced", "poison", "poison_epsilon"]


def canonicalize_axes(axes: Axes, ndim: int, *, name: str = "axes") -> tuple[int, ...]:
    """Returns ``axes`` as a sorted tuple of non-negative ints, validated against ``ndim``.

    Raises:
      TypeError: ``axes`` is not an int or a sequence of ints (e.g. ``None`` or ``0.0``).
      ValueError: an axis is out of range for rank ``ndim`` or two entries name the same axis.
    """
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        given: tuple = (axes,)
    elif isinstance(axes, Sequence) and not isinstance(axes, str):
        given = tuple(axes)
    else:
        raise TypeError(
            f"{name} must be an int or a sequence of ints (axes of the input), got "
            f"{axes!r}; e.g. {name}=-1 or {name}=(1, 2)."
        )
    out = []
    for axis in given:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"{name} must be ints, got {axis!r} in {name}={axes!r}.")
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"{name}={axes!r} contains axis {axis}, which is out of range for an input "
                f"of rank {ndim} (valid axes: {-ndim}..{ndim - 1})."
            )
        out.append(int(axis) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(
            f"{name}={axes!r} names the same axis more than once for an input of rank {ndim} "
            f"(as non-negative axes: {tuple(out)}); list each axis once."
        )
    return tuple(sorted(out))


def single_axis(axes: Axes, ndim: int, *, name: str = "feature_axes") -> int:
    """The one canonical axis ``axes`` names (an int or a 1-sequence), for the norms whose
    features live on a single axis (GroupNorm's groups, the per-channel variants)."""
    given = canonicalize_axes(axes, ndim, name=name)
    if len(given) != 1:
        raise ValueError(
            f"{name}={axes!r} names {len(given)} axes; this norm takes its features on one "
            f"axis (e.g. {name}=-1 for channels-last, {name}=1 for channels-first)."
        )
    return given[0]


def channel_axes(ndim: int, feature_axes: Axes, batch_axes: Axes
                 ) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """``(c, batch, spatial)``: the canonical feature (channel) axis, the batch axes, and the
    rest (the axes per-channel statistics of one example run over). The feature axis may not
    be a batch axis."""
    c = single_axis(feature_axes, ndim)
    batch = canonicalize_axes(batch_axes, ndim, name="batch_axes")
    if c in batch:
        raise ValueError(
            f"feature_axes={feature_axes} is also a batch axis (batch_axes={batch_axes!r}); "
            "an axis is either the feature axis or a batch axis."
        )
    return c, batch, tuple(a for a in range(ndim) if a != c and a not in batch)


def renamed_arguments(**old_to_new: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Keeps deprecated keyword names of a public function working: ``old=`` is passed on as
    ``new=`` with a ``DeprecationWarning`` (both at once is a ``TypeError``). On an
    ``__init__`` the messages name the class."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__qualname__.removesuffix(".__init__")

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    deprecated_name(name, old, new, both=new in kwargs, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return call

    return wrap


def deprecated_name(owner: str, old: str, new: str, *, both: bool, stacklevel: int) -> None:
    """``owner(old=...)`` was given: a ``TypeError`` if ``new=`` was given too, else a
    ``DeprecationWarning`` (``stacklevel`` counted from the caller of this function)."""
    if both:
        raise TypeError(f"{owner}() got {old}= and {new}=; pass {new}= only ({old}= is its "
                        "deprecated name).")
    warnings.warn(f"{owner}({old}=...) is deprecated: use {new}=... (the same axes; one axis "
                  "vocabulary across normjax's norms).", DeprecationWarning,
                  stacklevel=stacklevel + 1)


def complement_axes(axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    """The axes of a rank-``ndim`` array that are not in (canonical) ``axes``."""
    return tuple(i for i in range(ndim) if i not in axes)


def feature_shape(shape: Sequence[int], feature_axes: Sequence[int]) -> tuple[int, ...]:
    """Shape of a per-feature parameter: ``shape`` restricted to (canonical) ``feature_axes``."""
    return tuple(shape[a] for a in feature_axes)


def broadcast_mask(mask: ArrayLike, shape: tuple[int, ...]) -> Array:
    """``mask`` as a boolean array of exactly ``shape``; raises a clear error if it can't be.

    A boolean mask, or an integer one read as flags (nonzero: counts), as flax reads it.

    Raises:
      TypeError: a floating-point mask (weights or flags? ``0.3`` would count as True): give
        ``mask > 0`` or ``mask.astype(bool)`` to say which elements count.
      ValueError: ``mask`` does not broadcast to ``shape``.
    """
    mask = jnp.asarray(mask)
    if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.integer)):
        raise TypeError(
            f"mask must be boolean (or integer flags), got dtype {mask.dtype}: only True "
            "elements enter the statistics, and a float mask (weights? 0/1 flags?) is "
            "ambiguous. Pass e.g. mask > 0 or mask.astype(bool)."
        )
    try:
        np.broadcast_shapes(mask.shape, shape)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to the input shape {shape}; "
            "give a boolean mask broadcastable to the input (e.g. shape (batch, 1) for rows)."
        ) from None
    if np.broadcast_shapes(mask.shape, shape) != shape:
        raise ValueError(
            f"mask of shape {mask.shape} would enlarge the input shape {shape}; "
            "the mask must broadcast to the input's shape."
        )
    return jnp.broadcast_to(mask.astype(bool), shape)


def check_reduction(
    shape: tuple[int, ...], axes: tuple[int, ...], axis_name: AxisName, what: str
) -> None:
    """Raises where the reduction axes hold no elements (statistics of an empty batch).

    Reducing over no axes at all is allowed, as in flax: every element is its own group, its
    mean is itself and its variance 0, so the normalized value is 0 and a norm returns its
    bias. BatchNorm refuses that case itself (:func:`normjax.batch_norm`).
    """
    check_axis_name(axis_name, what)
    if any(shape[a] == 0 for a in axes):
        raise ValueError(
            f"{what}: the reduction axes {axes} of an input of shape {shape} hold no "
            "elements; statistics of an empty batch are undefined."
        )


def check_axis_name(axis_name: AxisName, what: str) -> None:
    """Raises a ``NameError`` naming ``what`` and the bound axis names when ``axis_name`` (or
    one of a tuple of names) is not bound by an enclosing ``vmap``, ``shard_map`` or ``pmap``."""
    if axis_name is None:
        return
    for name in axis_name if isinstance(axis_name, tuple) else (axis_name,):
        try:
            lax.axis_size(name)
        except NameError:
            raise NameError(
                f"{what}: axis_name={axis_name!r} is not bound here (bound axis names: "
                f"{_bound_axis_names() or 'none'}). Call it inside the jax.vmap(..., "
                "axis_name=...), jax.shard_map or jax.pmap(..., axis_name=...) that defines "
                "the name, spelled the same, or drop axis_name to keep the statistics local."
            ) from None


def _bound_axis_names() -> list[Any]:
    """The axis names bound where this is traced (best effort: empty if JAX hides them)."""
    env = getattr(jax_core, "get_axis_env", lambda: None)()
    return list(getattr(env, "axis_sizes", {}) or {})


def is_traced(value: Any) -> bool:
    """Whether ``value`` (or a leaf of it) is a tracer: its value is unknown at trace time."""
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(value))


def poison(valid: Array, out: Any, message: str, **fmt: Any) -> Any:
    """``out`` where ``valid`` holds, NaN where it does not: how a norm reports an argument that
    is only known when the program runs (a traced ``rate``, ``decay`` or ``epsilon``).

    The check is also a ``checkify`` check: under ``checkify.checkify(f,
    errors=checkify.user_checks)`` an invalid value raises with ``message`` (formatted with
    ``fmt``); without checkify the NaN is what shows.
    """
    checkify.debug_check(valid, message, **fmt)
    return jax.tree_util.tree_map(
        lambda a: jnp.where(valid, a, jnp.asarray(jnp.nan, a.dtype)), out)


EPSILON_MESSAGE = "epsilon must be a finite number >= 0, got {epsilon}."


def check_epsilon(epsilon: float | ArrayLike) -> None:
    """Raises if a concrete ``epsilon`` (Python, NumPy or JAX) is negative or not finite; a
    traced one is checked when the program runs (:func:`poison_epsilon`)."""
    if is_traced(epsilon):
        return
    value = np.asarray(epsilon)
    if not np.all(np.isfinite(value) & (value >= 0)):
        raise ValueError(EPSILON_MESSAGE.format(epsilon=repr(epsilon)))


def poison_epsilon(y: Array, epsilon: float | ArrayLike) -> Array:
    """``y``, or NaN where a traced ``epsilon`` is negative or not finite (:func:`poison`)."""
    if not is_traced(epsilon):
        return y
    eps = jnp.asarray(epsilon)
    return poison(jnp.all(jnp.isfinite(eps) & (eps >= 0)), y,
                  EPSILON_MESSAGE.format(epsilon="{epsilon}"), epsilon=eps)


def check_train(train: Any) -> bool:
    """``train`` as a Python bool (NumPy bools accepted); a traced or non-bool value raises."""
    if isinstance(train, np.bool_):
        return bool(train)
    if not isinstance(train, bool):
        raise TypeError(
            f"train must be a Python bool (static: True or False), got {type(train).__name__}; "
            "under jit mark it static (static_argnames=('train',))."
        )
    return train

"""The global switch between the closed-form backward of the norms and plain autodiff.

``batch_norm`` (train), ``layer_norm``, ``rms_norm``, ``instance_norm`` and ``group_norm``
compute floating-point inputs through :func:`normjax._fused.fused_normalize` while the switch is
on (the default): the same values, with a ``jax.custom_vjp`` closed-form backward that is faster
than autodiff. A ``custom_vjp`` supports reverse mode of any order and ``jax.hessian``, but not
pure forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``); with the switch off the norms
run ``moments`` + ``standardize`` and every transformation works.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

__all__ = ["fused_backward_enabled", "set_fused_backward", "use_fused_backward"]


class _Flag:
    """A process-wide flag (for jax releases without ``jax.make_user_context``)."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def set_global(self, value: bool) -> None:
        self.value = value

    @contextlib.contextmanager
    def __call__(self, value: bool) -> Iterator[None]:
        previous, self.value = self.value, value
        try:
            yield
        finally:
            self.value = previous


# Part of jax.jit's cache key where jax supports it: flipping it re-traces jitted functions.
_FUSED_BACKWARD = (jax.make_user_context(True) if hasattr(jax, "make_user_context")
                   else _Flag(True))


def _check_enabled(enabled: Any) -> bool:
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"enabled must be a bool (True or False), got {enabled!r}.")
    return bool(enabled)


def fused_backward_enabled() -> bool:
    """Whether the norms currently use the closed-form backward (see :func:`set_fused_backward`)."""
    return bool(_FUSED_BACKWARD.value)


def set_fused_backward(enabled: bool) -> None:
    """Turns the closed-form (``jax.custom_vjp``) backward of the norms on or off globally.

    On (the default), ``batch_norm`` (train), ``layer_norm``, ``rms_norm``, ``instance_norm``
    and ``group_norm`` compute floating-point inputs through ``normjax._fused`` (same values,
    faster gradients). Like every ``custom_vjp`` it supports reverse mode of any order and
    ``jax.hessian`` but not pure forward mode (``jax.jvp``, ``jax.jacfwd``,
    ``jax.linearize``): turn it off for those, and the norms differentiate ``moments`` and
    ``standardize`` with plain autodiff. The setting is read when a function is traced; on jax
    releases with ``jax.make_user_context`` it is part of ``jax.jit``'s cache key, so flipping
    it re-traces jitted functions (on older releases, call ``jax.clear_caches()``).
    """
    _FUSED_BACKWARD.set_global(_check_enabled(enabled))


@contextlib.contextmanager
def use_fused_backward(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_fused_backward`; restores the setting on exit::

        with normjax.use_fused_backward(False):
            y, y_dot = jax.jvp(lambda x: normjax.layer_norm(x), (x,), (t,))
    """
    with _FUSED_BACKWARD(_check_enabled(enabled)):
        yield

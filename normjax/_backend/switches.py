"""The switch between the norms' closed-form derivatives and JAX's autodiff of the statistics.

``batch_norm`` (train), ``layer_norm``, ``rms_norm``, ``instance_norm`` and ``group_norm`` (and
the variants on their path) compute floating-point inputs through :mod:`normjax._backend`
while the switch is on (the default): closed-form derivatives in both modes, under every
transform. Off, they run ``moments`` + ``standardize`` under JAX's own autodiff (the same
values, slower gradients). Nothing needs it off; the benchmarks time that path as *autodiff*.
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
    and ``group_norm`` compute floating-point inputs through ``normjax._backend`` (closed-form
    derivatives in both autodiff modes); off, they differentiate ``moments`` and
    ``standardize`` with JAX's autodiff (same values; no transform needs it off). The setting
    is read when a function is traced; on jax
    releases with ``jax.make_user_context`` it is part of ``jax.jit``'s cache key, so flipping
    it re-traces jitted functions (on older releases, call ``jax.clear_caches()``).
    """
    _FUSED_BACKWARD.set_global(_check_enabled(enabled))


@contextlib.contextmanager
def use_fused_backward(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_fused_backward`; restores the setting on exit.

    >>> import jax, jax.numpy as jnp, normjax
    >>> x = jnp.arange(8.0).reshape(2, 4)
    >>> loss = lambda x: jnp.sum(normjax.layer_norm(x) * x)
    >>> with normjax.use_fused_backward(False):  # JAX's autodiff of the statistics
    ...     g = jax.grad(loss)(x)
    >>> bool(jnp.allclose(g, jax.grad(loss)(x), atol=1e-5))  # the fused backward agrees
    True
    """
    with _FUSED_BACKWARD(_check_enabled(enabled)):
        yield

"""Spectral Normalization (Miyato, Kataoka, Koyama & Yoshida, 2018, arXiv:1802.05957).

A weight is divided by its largest singular value ``sigma(W)``, estimated by power iteration
with a persistent vector ``u`` kept in explicit state (one or a few iterations per training
step suffice because ``W`` changes slowly)::

    W2 = reshape(W, (-1, out))                 (a Conv (..., in, out) kernel as a matrix)
    repeat n_power_iterations times:
        v = l2normalize(u @ W2^T)
        u = l2normalize(v @ W2)
    sigma = v @ W2 @ u^T                       (u, v under stop_gradient)
    W_SN  = W / sigma

``l2normalize(a) = a / sqrt(sum(a^2) + epsilon)``. The gradient flows through ``sigma`` (the
paper's Eq. 12), not through ``u`` and ``v``. Conventions follow ``flax.linen.SpectralNorm``:
output features on the last axis; ``train=True`` stores the new ``u`` and ``sigma``;
``train=False`` runs the same iterations from the stored ``u`` but returns the state
unchanged (deterministic evaluation).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax._checks import check_epsilon, check_train
from normjax._numerics import stats_dtype
from normjax._typing import Array, ArrayLike

__all__ = ["SpectralNormState", "spectral_norm", "spectral_norm_init"]


class SpectralNormState(NamedTuple):
    """Power-iteration state.

    Attributes:
      u: the current estimate of the top right singular vector of ``W2`` (the matrix view
        of the kernel), shape ``(out,)``, unit norm.
      sigma: the last estimate of the largest singular value (scalar, 1 at init).
    """

    u: Array
    sigma: Array


def _as_matrix(w: Array) -> Array:
    if w.ndim < 2:
        raise ValueError(
            f"spectral_norm needs a kernel of rank >= 2 (Dense (in, out) or Conv "
            f"(..., in, out)), got shape {w.shape}."
        )
    return w.reshape(-1, w.shape[-1])


def spectral_norm_init(
    key: Array, w: ArrayLike, *, dtype: jnp.dtype = jnp.float32
) -> SpectralNormState:
    """A random unit ``u`` of shape ``(w.shape[-1],)`` (normal draw) and ``sigma = 1``."""
    w2 = _as_matrix(jnp.asarray(w))
    u = jax.random.normal(key, (w2.shape[1],), dtype)
    return SpectralNormState(u=u / jnp.linalg.norm(u), sigma=jnp.ones((), dtype))


def _l2normalize(a: Array, epsilon: float) -> Array:
    return a * lax.rsqrt(jnp.sum(a * a) + jnp.asarray(epsilon, a.dtype))


def spectral_norm(
    w: ArrayLike,
    state: SpectralNormState,
    *,
    n_power_iterations: int = 1,
    train: bool,
    epsilon: float = 1e-12,
) -> tuple[Array, SpectralNormState]:
    """``W / sigma(W)``: ``w_sn, new_state = spectral_norm(w, state, train=...)``.

    Args:
      w: kernel, output features last (Dense ``(in, out)``, Conv ``(..., in, out)``).
      state: :class:`SpectralNormState` from :func:`spectral_norm_init`.
      n_power_iterations: power-iteration steps per call (``>= 1``; static).
      train: keyword-only: store the new ``u`` and ``sigma`` (``True``) or return the state
        unchanged (``False``).
      epsilon: stabilizer of the l2 normalization.

    Returns:
      ``(w_sn, new_state)``; ``w_sn`` has the dtype of ``w``. Where ``sigma == 0`` (a zero
      kernel) ``w`` is returned undivided.
    """
    train = check_train(train)
    check_epsilon(epsilon)
    if isinstance(n_power_iterations, bool) or not isinstance(
            n_power_iterations, (int, np.integer)) or n_power_iterations < 1:
        raise ValueError(
            f"n_power_iterations must be an int >= 1, got {n_power_iterations!r}."
        )
    w = jnp.asarray(w)
    if not isinstance(state, SpectralNormState):
        raise TypeError(f"state must be a SpectralNormState (see spectral_norm_init), got "
                        f"{type(state).__name__}.")
    dt = stats_dtype(w.dtype)
    w2 = _as_matrix(w).astype(dt)
    if jnp.shape(state.u) != (w2.shape[1],):
        raise ValueError(
            f"state.u has shape {jnp.shape(state.u)}, expected ({w2.shape[1]},) (the kernel's "
            "output features, its last axis)."
        )

    def step(_: int, uv: tuple[Array, Array]) -> tuple[Array, Array]:
        v = _l2normalize(uv[0] @ w2.T, epsilon)
        return _l2normalize(v @ w2, epsilon), v

    u0 = state.u.astype(dt)
    u, v = lax.fori_loop(0, int(n_power_iterations), step, (u0, jnp.zeros(w2.shape[0], dt)))
    u, v = lax.stop_gradient(u), lax.stop_gradient(v)
    sigma = v @ w2 @ u
    w_sn = (w.astype(dt) / jnp.where(sigma != 0, sigma, 1)).astype(w.dtype)
    if not train:
        return w_sn, state
    sdt = state.sigma.dtype
    return w_sn, SpectralNormState(u=u.astype(state.u.dtype), sigma=sigma.astype(sdt))

"""Shared pieces of the CPU-kernel tests: the skip marker, a float64 NumPy oracle of the
kernels' formulas, random float32 inputs and a relative closeness check."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normjax._backend import build as _native

# The kernels run where the arrays live on the CPU: on a machine whose default backend is a GPU
# the public functions take their XLA twins, so the kernel tests have nothing to test there.
needs_kernels = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not _native.native_available(),
    reason=f"CPU kernels not in use: backend {jax.default_backend()}, {_native.native_status()}")


def oracle_moments(x: np.ndarray, g: int, center: bool) -> tuple[np.ndarray, np.ndarray]:
    b, r, c = x.shape
    xg = x.astype(np.float64).reshape(b, r, g, c // g)
    if not center:
        return np.zeros((b, g)), np.mean(xg * xg, axis=(1, 3))
    return xg.mean(axis=(1, 3)), xg.var(axis=(1, 3))


def oracle_grad(gy: np.ndarray, x: np.ndarray, eps: np.ndarray, scale: np.ndarray,
                gm: np.ndarray, gv: np.ndarray, center: bool) -> tuple:
    gy, x, eps, scale, gm, gv = (np.asarray(a, np.float64) for a in (gy, x, eps, scale, gm, gv))
    b, r, c = x.shape
    g = eps.shape[-1]
    mean, var = oracle_moments(x, g, center)
    rstd = 1 / np.sqrt(var + eps)
    k = c // g
    rows = np.repeat(scale, b // scale.shape[0], axis=0)[:, None, :]  # [B, 1, C]
    per = lambda a: np.repeat(a, k, axis=-1)[:, None, :]  # noqa: E731  [B, G] -> [B, 1, C]
    xc = x - (per(mean) if center else 0)
    h = gy * rows
    s1 = h.sum(1).reshape(b, g, k).sum(-1)
    t2 = (h * xc).sum(1).reshape(b, g, k).sum(-1)
    n = r * k
    c1 = (2 * gv - rstd**3 * t2) / n
    c0 = (gm - rstd * s1) / n if center else 0 * s1
    dx = per(rstd) * h + per(c0) + per(c1) * xc
    dscale = (gy * xc * per(rstd)).sum(1).reshape(scale.shape[0], -1, c).sum(1)
    dbias = gy.sum(1).reshape(scale.shape[0], -1, c).sum(1)
    return dx, dscale, dbias, -0.5 * rstd**3 * t2


def rand(shape: tuple[int, ...], seed: int, loc: float = 0.0, sd: float = 1.0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(loc, sd, shape).astype(np.float32))


def close(got: Any, want: Any, rtol: float = 2e-5) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(float(np.max(np.abs(want))), 1e-30)
    assert float(np.max(np.abs(got - want))) <= rtol * scale

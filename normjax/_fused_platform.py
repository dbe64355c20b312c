"""Where the fused norms' formulation depends on the platform they are compiled for.

The formulation in :mod:`normjax._fused_grad` is tuned for XLA:CPU. Two of its choices cost
time on an accelerator (measured on an H100 against flax.linen, batch 16x the CPU benchmark
shapes; see ``docs/performance.md``):

* ``lax.optimization_barrier`` pins which reductions XLA:CPU fuses; on a GPU it keeps XLA from
  fusing sibling reductions and the output (1.2-1.5x slower forward+backward for channels-first
  BatchNorm, InstanceNorm and bfloat16 RMSNorm). :func:`cpu_barrier` applies it on the CPU only.
* The guarded one-pass variance (:func:`normjax.stats.guarded_variance`) branches on a scalar
  computed on the device (``lax.cond``). On a GPU, XLA reads that scalar back to the host before
  it launches the branch, so every call waits for the device: 1.2-1.35x slower on the MLP
  BatchNorm. Off the CPU the forward takes :func:`shifted_moments` instead: one pass, no branch.

The platform is decided when the function is traced: that of ``jax.default_device`` where it is
set, else JAX's default backend. A computation placed elsewhere (CPU arrays on a GPU machine)
still gets the right values, with the other platform's formulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax.stats import Moments, stats_dtype

Array = jax.Array

__all__ = ["cpu_barrier", "cpu_target", "shifted_moments"]


def cpu_target() -> bool:
    """Whether the computation being traced is compiled for the CPU (see the module notes)."""
    device = jax.config.jax_default_device
    if device is not None:
        return getattr(device, "platform", device) == "cpu"
    return jax.default_backend() == "cpu"


def cpu_barrier(tree: Any) -> Any:
    """``lax.optimization_barrier(tree)`` when compiling for the CPU, else ``tree`` itself."""
    return lax.optimization_barrier(tree) if cpu_target() else tree


def shifted_moments(x: Array, axes: Sequence[int]) -> Moments:
    """Keepdims moments over ``axes`` in one pass over ``x`` shifted by its first element.

    With ``k`` the element at index 0 of every reduced axis (one per group) and ``d = x - k``::

        mean = k + sum(d) / n,    var = max(sum(d^2) / n - (sum(d) / n)^2, 0)

    the "shifted data" one-pass algorithm (Chan, Golub & LeVeque 1983, "Algorithms for computing
    the sample variance", The American Statistician 37(3)). Its relative error is about
    ``(1 + 2 z^2)`` roundings of float32, ``z = (k - mean) / std`` the first element's z-score,
    whatever the mean: no cancellation for data far from zero, unlike ``E[x^2] - E[x]^2``. Both
    sums come from one read of ``x`` and there is no data-dependent branch.
    """
    xf = x.astype(stats_dtype(x.dtype))
    first = tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))
    k = lax.stop_gradient(xf[first])
    d = xf - k
    n = float(np.prod([x.shape[a] for a in axes]))
    m1 = jnp.sum(d, axes, keepdims=True) / n
    m2 = jnp.sum(d * d, axes, keepdims=True) / n
    var = jnp.maximum(m2 - m1 * m1, 0)
    return Moments(k + m1, var, jnp.full(m1.shape, n, m1.dtype))

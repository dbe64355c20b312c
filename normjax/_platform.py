"""Where normjax's formulation depends on the platform a computation is compiled for.

The formulation in :mod:`normjax._backend.closed_form` is tuned for XLA:CPU. Two of its choices cost
time on an accelerator (measured on an H100 against flax.linen, batch 16x the CPU benchmark
shapes; see ``docs/performance.md``):

* ``lax.optimization_barrier`` pins which reductions XLA:CPU fuses; on a GPU it keeps XLA from
  fusing sibling reductions and the output (1.2-1.5x slower forward+backward for channels-first
  BatchNorm, InstanceNorm and bfloat16 RMSNorm). :func:`cpu_barrier` applies it on the CPU only.
* The guarded one-pass variance (:func:`normjax._numerics.guarded_variance`) branches on a scalar
  computed on the device (``lax.cond``). On a GPU, XLA reads that scalar back to the host before
  it launches the branch, so every call waits for the device: 1.2-1.35x slower on the MLP
  BatchNorm. Off the CPU the norms' forward and :func:`normjax.moments` take
  :func:`normjax._numerics.shifted_moments` instead: one pass, no branch.

The platform is decided when the function is traced: that of ``jax.default_device`` where it is
set, else JAX's default backend. A computation placed elsewhere (CPU arrays on a GPU machine)
still gets the right values, with the other platform's formulation.
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax

__all__ = ["cpu_barrier", "cpu_target"]


def cpu_target() -> bool:
    """Whether the computation being traced is compiled for the CPU (see the module notes)."""
    device = jax.config.jax_default_device
    if device is not None:
        return getattr(device, "platform", device) == "cpu"
    return jax.default_backend() == "cpu"


def cpu_barrier(tree: Any, cpu: bool) -> Any:
    """``lax.optimization_barrier(tree)`` when compiling for the CPU (``cpu``, the norm's
    recorded :func:`cpu_target`), else ``tree`` itself."""
    return lax.optimization_barrier(tree) if cpu else tree

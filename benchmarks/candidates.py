"""Benchmark cases and the implementations timed on them.

Every candidate is a function ``(x, scale, bias) -> y`` or ``-> (y, extra)`` (BatchNorm also
returns its updated running statistics); the suite jits it for the forward timing and
differentiates ``sum(y * cotangent)`` with respect to ``(x, scale, bias)`` for forward+backward.

Candidates per case:

* ``normjax``: the public functions (``normjax.layer_norm``, ``normjax.batch_norm``, ...) with
  their defaults (closed-form backward, stable variance).
* ``normjax-xla``: the same under ``normjax.use_native_kernels(False)``: everything in XLA
  operations, without the CPU kernels (the path other backends and unsupported layouts take).
* ``normjax-autodiff``: the public functions traced under ``normjax.use_fused_backward(False)``
  (gradients by JAX's autodiff through the statistics instead of the closed form).
* ``flax``: the ``flax.linen`` layer with matching settings (no channels-first GroupNorm there).
* ``torch``: see :mod:`benchmarks.torch_candidates` (only when PyTorch is installed).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import normjax

Norm = Callable[[jax.Array, jax.Array, jax.Array], Any]

__all__ = ["CASES", "Case", "flax_candidate", "normjax_candidate"]

NUM_GROUPS = 32
BN_DECAY = 0.99


@dataclass(frozen=True)
class Case:
    """One benchmark shape.

    Attributes:
      name: label in the tables.
      kind: ``"group"``, ``"layer"``, ``"batch"``, ``"instance"`` or ``"rms"``.
      shape: input shape (full mode); ``quick_shape`` is used with ``--quick``.
      dtype: input dtype name.
      channel_axis: the channel (feature) axis for group/batch/instance norms.
      quick: whether the case runs in ``--quick`` mode.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    channel_axis: int = -1
    quick: bool = False
    quick_shape: tuple[int, ...] | None = None

    @property
    def epsilon(self) -> float:
        return 1e-5 if self.kind == "batch" else 1e-6

    @property
    def channels(self) -> int:
        return self.shape[self.channel_axis]

    @property
    def reduction_axes(self) -> tuple[int, ...]:
        """Statistics axes for BatchNorm / InstanceNorm (all but channel, and batch for IN)."""
        c = self.channel_axis % len(self.shape)
        skip = {c} if self.kind == "batch" else {0, c}
        return tuple(a for a in range(len(self.shape)) if a not in skip)


CASES: tuple[Case, ...] = (
    Case("GroupNorm NHWC", "group", (16, 32, 32, 128), quick=True, quick_shape=(4, 32, 32, 128)),
    Case("GroupNorm NCHW", "group", (16, 128, 32, 32), channel_axis=1),
    Case("GroupNorm NHWC bf16", "group", (16, 32, 32, 128), "bfloat16"),
    Case("LayerNorm", "layer", (16, 512, 768), quick=True, quick_shape=(4, 256, 768)),
    Case("LayerNorm bf16", "layer", (16, 512, 768), "bfloat16"),
    Case("BatchNorm NHWC", "batch", (64, 32, 32, 128), quick=True,
         quick_shape=(16, 32, 32, 128)),
    Case("BatchNorm NCHW", "batch", (64, 128, 32, 32), channel_axis=1),
    Case("BatchNorm MLP", "batch", (1024, 1024), quick=True, quick_shape=(512, 1024)),
    Case("BatchNorm MLP bf16", "batch", (1024, 1024), "bfloat16"),
    Case("InstanceNorm NHWC", "instance", (16, 32, 32, 128), quick=True,
         quick_shape=(4, 32, 32, 128)),
    Case("InstanceNorm NCHW", "instance", (16, 128, 32, 32), channel_axis=1),
    Case("RMSNorm", "rms", (16, 512, 768), quick=True, quick_shape=(4, 256, 768)),
    Case("RMSNorm bf16", "rms", (16, 512, 768), "bfloat16"),
)


def _bn_state(case: Case) -> normjax.BatchNormState:
    return normjax.batch_norm_init(case.channels)


def normjax_candidate(case: Case, *, native: bool = True, fused: bool = True) -> Norm:
    """The public normjax function for ``case``.

    ``native=False`` traces it under ``normjax.use_native_kernels(False)`` (XLA operations
    only); ``fused=False`` under ``normjax.use_fused_backward(False)`` (plain autodiff).
    """
    c, kw = case.channel_axis, dict(epsilon=case.epsilon)
    if case.kind == "layer":
        fn = lambda x, s, b: normjax.layer_norm(x, s, b, **kw)  # noqa: E731
    elif case.kind == "rms":
        fn = lambda x, s, b: normjax.rms_norm(x, s, epsilon=case.epsilon)  # noqa: E731
    elif case.kind == "group":
        # builds before the one axis vocabulary called group_norm's feature axis channel_axis
        # (benchmarks.compare_builds times them with these candidates)
        name = ("feature_axes" if "feature_axes" in inspect.signature(normjax.group_norm).parameters
                else "channel_axis")
        fn = lambda x, s, b: normjax.group_norm(  # noqa: E731
            x, s, b, num_groups=NUM_GROUPS, **{name: c}, **kw)
    elif case.kind == "instance":
        fn = lambda x, s, b: normjax.instance_norm(x, s, b, feature_axes=c, **kw)  # noqa: E731
    else:
        state = _bn_state(case)
        fn = lambda x, s, b: normjax.batch_norm(  # noqa: E731
            x, state, scale=s, bias=b, reduction_axes=case.reduction_axes, train=True,
            decay=BN_DECAY, **kw)
    if fused and native:
        return fn

    def switched(x: jax.Array, s: jax.Array, b: jax.Array) -> Any:
        with normjax.use_fused_backward(fused), normjax.use_native_kernels(native):
            return fn(x, s, b)

    return switched


def _flax_module(case: Case) -> nn.Module | None:
    dtype, eps, c = jnp.dtype(case.dtype), case.epsilon, case.channel_axis
    if case.kind == "layer":
        return nn.LayerNorm(epsilon=eps, dtype=dtype)
    if case.kind == "rms":
        return nn.RMSNorm(epsilon=eps, dtype=dtype)
    if case.kind == "group":
        channels_last = c % len(case.shape) == len(case.shape) - 1
        if not channels_last:
            return None  # flax's GroupNorm takes the last axis as the channel axis
        return nn.GroupNorm(num_groups=NUM_GROUPS, epsilon=eps, dtype=dtype)
    if case.kind == "instance":
        return nn.InstanceNorm(epsilon=eps, dtype=dtype, feature_axes=c)
    return nn.BatchNorm(use_running_average=False, axis=c, momentum=BN_DECAY, epsilon=eps,
                        dtype=dtype)


def flax_candidate(case: Case) -> Norm | None:
    """The ``flax.linen`` layer for ``case``, or ``None`` where flax has no equivalent."""
    module = _flax_module(case)
    if module is None:
        return None
    x = jnp.zeros((2, *case.shape[1:]), case.dtype)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    stats = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), variables.get("batch_stats"))

    def apply(x: jax.Array, s: jax.Array, b: jax.Array) -> Any:
        params = {"scale": s} if case.kind == "rms" else {"scale": s, "bias": b}
        with jax.numpy_dtype_promotion("standard"):
            if stats is None:
                return module.apply({"params": params}, x)
            return module.apply({"params": params, "batch_stats": stats}, x,
                                mutable=["batch_stats"])

    return apply

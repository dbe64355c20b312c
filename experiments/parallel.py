"""Data parallelism over a 1-D device mesh, with synchronized or per-device BatchNorm.

Each training batch is split over the devices of a mesh with one axis, ``"data"``
(``config.devices``; 0 = every device JAX sees, on all hosts, or as many as ``batch_size``
splits evenly over); parameters, optimizer state and the training set are replicated.  The
seed/sweep axis stays vmapped, so an array of the step has shape ``(runs, batch, ...)`` and
sharding ``P(None, "data")``: each device holds
``batch / devices`` examples of every run.  A step is one ``jax.jit`` program over sharded
arrays; XLA inserts the collectives (all-reduce of the gradients and of the BatchNorm sums).

BatchNorm statistics (``config.bn_sync``):

* ``"global"``, synchronized BN: ``mu = 1/b sum_i x_i``, ``var = 1/b sum_i (x_i - mu)^2`` over
  the whole batch of all devices.  The partial sums are all-reduced, so a run on ``D`` devices
  gives the numbers of a run on one (up to the order of float summation).
* ``"local"``, unsynchronized BN (PyTorch ``DataParallel``/DDP without ``SyncBatchNorm``): each
  device normalizes its own ``b / D`` examples with their own statistics, i.e. Ghost Batch
  Normalization (Hoffer et al., 2017, "Train longer, generalize better", arXiv:1705.08741) with
  one ghost batch per device.  The batch is reshaped to ``(D, b / D, ...)`` (row block ``d``
  lives on device ``d``) and the model is vmapped over the blocks.  The stored running
  statistics are the mean over devices of the per-device updates (running mean: EMA of the
  global batch mean; running var: EMA of the mean within-device variance), and each device
  draws its own dropout masks (the dropout key folded with the device index).  Models without
  running statistics train exactly as with ``"global"``.

Several processes (hosts): :func:`initialize_distributed` calls ``jax.distributed.initialize``
from the environment (``NORMJAX_COORDINATOR_ADDRESS``, ``NORMJAX_NUM_PROCESSES``,
``NORMJAX_PROCESS_ID``) before JAX starts; every process then sees the global devices, builds the
same mesh and places the same (replicated) data, and the programs run as on one host.  See
``docs/distributed.md``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.errors import ConfigError
from experiments.typed_config import StudyConfig

__all__ = ["BN_SYNC_MODES", "DATA_AXIS", "DataParallel", "ENV_VARS", "apply_per_device",
           "check_batch_split", "data_parallel", "from_config", "initialize_distributed",
           "resolve_devices"]

BN_SYNC_MODES = ("global", "local")
DATA_AXIS = "data"
ENV_VARS = ("NORMJAX_COORDINATOR_ADDRESS", "NORMJAX_NUM_PROCESSES", "NORMJAX_PROCESS_ID")

PyTree = Any
log = logging.getLogger("experiments")


def resolve_devices(requested: int, available: int, batch_size: int | None = None) -> int:
    """The device count of ``config.devices = requested``.

    0 means all ``available`` devices, or, when ``batch_size`` does not split evenly over
    them, the largest count that it does split over (with a warning); an explicit count is
    used as it is (see :func:`check_batch_split`).
    """
    if requested == 0:
        n = max(d for d in range(1, available + 1) if batch_size is None or batch_size % d == 0)
        if n < available:
            log.warning("batch_size (%d) does not split evenly over the %d available devices; "
                        "using %d of them (set config.devices to choose)", batch_size,
                        available, n)
        return n
    if requested > available:
        raise ConfigError(f"devices={requested} but only {available} device(s) are available "
                          f"({jax.default_backend()}); use devices=0 for all of them or fewer")
    return requested


def check_batch_split(batch_size: int, devices: int, bn_sync: str) -> None:
    """A batch must split evenly over the devices (and, for local BN, into >= 2 per device)."""
    if batch_size % devices:
        raise ConfigError(
            f"batch_size ({batch_size}) is not divisible by the number of devices ({devices}); "
            f"each device must get the same number of examples: choose a batch_size that is a "
            f"multiple of {devices}, or set config.devices to a divisor of {batch_size}")
    if bn_sync == "local" and devices > 1 and batch_size // devices < 2:
        raise ConfigError(
            f"bn_sync='local' normalizes the batch_size / devices = {batch_size // devices} "
            f"example(s) of each device on their own, so every BatchNorm output would be "
            f"constant; use at least 2 examples per device or bn_sync='global'")


@dataclass(frozen=True)
class DataParallel:
    """A 1-D ``"data"`` mesh and the BatchNorm mode; places and constrains arrays on it."""

    mesh: Mesh
    bn_sync: str = "global"

    def __post_init__(self) -> None:
        if self.bn_sync not in BN_SYNC_MODES:
            raise ConfigError(f"bn_sync must be one of {list(BN_SYNC_MODES)}, "
                              f"got {self.bn_sync!r}")
        if self.mesh.axis_names != (DATA_AXIS,):
            raise ValueError(f"the mesh must have the one axis {DATA_AXIS!r}, "
                             f"got {self.mesh.axis_names}")

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def groups(self) -> int:
        """Groups whose statistics BatchNorm computes separately (1 = synchronized)."""
        return self.num_devices if self.bn_sync == "local" else 1

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def batch_sharding(self, axis: int = 0) -> NamedSharding:
        """Split axis ``axis`` over the devices, replicate the others."""
        return NamedSharding(self.mesh, P(*([None] * axis), DATA_AXIS))

    def shard_batch(self, tree: PyTree) -> PyTree:
        """Inside ``jit``: constrain the leading (batch) axis of every leaf to the mesh.

        Under ``vmap`` over runs the runs axis is inserted unsharded in front.
        """
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(
            a, self.batch_sharding()), tree)

    def place(self, tree: PyTree, sharding: NamedSharding | None = None) -> PyTree:
        """Global arrays laid out as ``sharding`` (default: replicated) from host values.

        Every process must pass the same values; each one fills only its own devices.
        """
        sharding = sharding or self.replicated

        def put(leaf: Any) -> jax.Array:
            if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
                return leaf
            host = np.asarray(leaf)
            return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

        return jax.tree.map(put, tree)

    def place_batches(self, tree: PyTree) -> PyTree:
        """Batched eval data ``(num_batches, b, ...)``: split ``b`` over the devices when it
        divides evenly, else replicate (each device then evaluates every example)."""
        def sharding(leaf: Any) -> NamedSharding:
            even = np.ndim(leaf) >= 2 and np.shape(leaf)[1] % self.num_devices == 0
            return self.batch_sharding(axis=1) if even else self.replicated

        return jax.tree.map(lambda leaf: self.place(leaf, sharding(leaf)), tree)

    def traced(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` traced with the data mesh as JAX's context mesh (its abstract mesh, which
        ``jax.sharding.use_abstract_mesh`` sets while tracing).

        Everything traced inside sees the layout: normjax's norms then decide by themselves
        whether their CPU kernels serve (on an Auto mesh of several devices they take the XLA
        formulation, which XLA partitions like any other operation; a custom call's operands
        would be gathered onto every device).
        """
        @functools.wraps(fn)
        def on_mesh(*args: Any, **kwargs: Any) -> Any:
            with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
                return fn(*args, **kwargs)

        return on_mesh

    def describe(self) -> dict[str, Any]:
        """The layout as recorded in ``summary.json`` (``"parallel"``)."""
        return {"devices": self.num_devices, "processes": jax.process_count(),
                "bn_sync": self.bn_sync, "bn_groups": self.groups,
                "platform": jax.default_backend()}


def data_parallel(devices: int = 0, bn_sync: str = "global") -> DataParallel:
    """A :class:`DataParallel` over the first ``devices`` devices (0 = all of them)."""
    n = resolve_devices(devices, jax.device_count())
    mesh = jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:n])
    return DataParallel(mesh, bn_sync)


def apply_per_device(apply: Callable[[jax.Array, jax.Array], tuple[jax.Array, PyTree]],
                     x: jax.Array, key: jax.Array, parallel: DataParallel
                     ) -> tuple[jax.Array, PyTree]:
    """``apply(x, key) -> (logits, mutated)`` with BatchNorm statistics per device.

    ``x (b, ...)`` becomes ``(D, b / D, ...)`` with row block ``d`` on device ``d``; ``apply``
    is vmapped over the blocks with the keys ``fold_in(key, d)``.  Outputs are merged back:
    logits and ``intermediates`` to ``(b, ...)``, ``batch_stats`` averaged over the devices
    (integer leaves, the update counts, are equal on every device and taken from device 0).
    """
    d = parallel.groups
    blocks = jax.lax.with_sharding_constraint(
        x.reshape(d, x.shape[0] // d, *x.shape[1:]), parallel.batch_sharding())
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(d, dtype=jnp.uint32))
    logits, mutated = jax.vmap(apply)(blocks, keys)
    merged = {name: jax.tree.map(_merge_stats if name == "batch_stats" else _merge_rows, value)
              for name, value in mutated.items()}
    return _merge_rows(logits), merged


def _merge_rows(a: jax.Array) -> jax.Array:
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


def _merge_stats(a: jax.Array) -> jax.Array:
    return jnp.mean(a, axis=0) if jnp.issubdtype(a.dtype, jnp.floating) else a[0]


def initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """``jax.distributed.initialize`` from ``NORMJAX_*`` variables (:data:`ENV_VARS`).

    Returns False when none is set, True once this process is part of a multi-process run (a
    second call is a no-op).  Must first run before JAX starts its backends (before any array
    is made).  On CPU the collectives between processes use gloo.
    """
    env = os.environ if env is None else env
    values = [env.get(name, "") for name in ENV_VARS]
    if not any(values):
        return False
    if not all(values):
        missing = [n for n, v in zip(ENV_VARS, values, strict=True) if not v]
        raise ConfigError(f"multi-process runs need all of {list(ENV_VARS)}; missing {missing}")
    address, num, pid = values
    try:
        num_processes, process_id = int(num), int(pid)
    except ValueError as e:
        raise ConfigError(f"NORMJAX_NUM_PROCESSES ({num!r}) and NORMJAX_PROCESS_ID ({pid!r}) "
                          f"must be integers") from e
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"NORMJAX_PROCESS_ID must be in [0, {num_processes}), got {process_id}")
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=num_processes,
                               process_id=process_id)
    return True


def from_config(config: StudyConfig) -> DataParallel:
    """The :class:`DataParallel` of ``config.devices`` / ``config.bn_sync``, after checking that
    the batch splits evenly (a :class:`ConfigError` naming batch_size and devices if not)."""
    n = resolve_devices(config.devices, jax.device_count(), config.batch_size)
    check_batch_split(config.batch_size, n, config.bn_sync)
    return data_parallel(n, config.bn_sync)

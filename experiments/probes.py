"""Extra measurements on train states; training itself is never changed.

A *probe* is a factory ``probe(model, config, ds) -> fn`` where ``fn(state) -> {name: array}``
measures one run: ``state`` is the run's state dict (``params``, ``batch_stats``, ``hparams``,
``seed``, ``step``; ``flax.serialization.to_state_dict`` of a TrainState).  :class:`ProbeHook`
is a hook for :func:`experiments.runner.run` (:mod:`experiments.hooks`): with the state in
memory (leading axis = runs), at init (step 0) and after every chunk, it applies the probe to
every run with one ``jit(vmap(fn))`` and appends one row per run to ``probes.jsonl``::

    {"technique", "cell", "seed", "step", <name>: value or nested list, ...}

Steps already in ``probes.jsonl`` (a resumed run redoing chunks) are not recorded twice.

Probes here:

* :func:`grad_norm_probe`: per-layer gradient norms on one training batch (train mode),
  ``||dL/dtheta_layer||`` as the runner logs them, but at any step including 0.
* :func:`input_quantile_probe`: quantiles (15/50/85%) of the input of each hidden layer's
  nonlinearity (after the norm, if any) per unit, on a fixed batch in train mode (Ioffe &
  Szegedy 2015, Figure 1).
* :func:`landscape_probe`: loss and gradient along ``theta - eta g`` (Santurkar et al. 2018).
* :func:`weight_probe`: the kernels' share of near-zero weights, their L1 and L2 norms, and a
  histogram of ``log10 |w|`` (what L1 and L2 penalties do to the weights).
* :func:`precise_bn_probe`: test accuracy after replacing the running BatchNorm statistics by
  the exact population statistics of ``K`` training batches (Wu & Johnson 2021, Precise BN),
  pooled with :func:`normjax.precise_moments`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import normjax
from experiments.data import Dataset
from experiments.hooks import Hook
from experiments.models import ACTIVATIONS
from experiments.runs import make_grid
from experiments.train import TrainState, deterministic_model
from experiments.typed_config import StudyConfig, typed_config
from experiments.writer import MetricsLog, read_jsonl
from normjax.linen import BatchNorm

__all__ = ["Probe", "ProbeHook", "grad_norm_probe", "input_quantile_probe", "landscape_probe",
           "preactivations", "precise_batch_stats", "precise_bn_probe", "weight_probe"]

State = dict[str, Any]
Probe = Callable[[nn.Module, StudyConfig, Dataset],
                 Callable[[State], dict[str, jax.Array]]]


def _variables(state: State) -> dict[str, Any]:
    return {"params": state["params"],
            **({"batch_stats": state["batch_stats"]} if state["batch_stats"] else {})}


def _train_loss(model: nn.Module, state: State, params: Any, x: jax.Array,
                y: jax.Array) -> jax.Array:
    """Mean cross-entropy with BatchNorm on the batch statistics (training mode)."""
    logits, _ = model.apply({**_variables(state), "params": params}, x, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _batch(ds: Dataset, size: int, *, split: str = "train") -> tuple[jax.Array, jax.Array]:
    """The first ``size`` examples of a fixed permutation (seed 0) of a split."""
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    idx = np.random.default_rng(0).permutation(len(x))[:min(size, len(x))]
    return jnp.asarray(x[idx]), jnp.asarray(y[idx])


def grad_norm_probe(batch_size: int | None = None) -> Probe:
    """``grad_norm/<top-level module>`` on one training batch (default: the batch size)."""
    def factory(model: nn.Module, config: StudyConfig,
                ds: Dataset) -> Callable[[State], dict[str, jax.Array]]:
        x, y = _batch(ds, batch_size or config.batch_size)

        def fn(state: State) -> dict[str, jax.Array]:
            grads = jax.grad(lambda p: _train_loss(model, state, p, x, y))(state["params"])
            return {f"grad_norm/{k}": optax.global_norm(g) for k, g in grads.items()}
        return fn
    return factory


def weight_probe(threshold: float = 1e-3,
                 edges: Sequence[float] = tuple(range(-8, 2))) -> Probe:
    """Statistics of all ``kernel`` weights of the hidden layers (the head excluded):

    ``weights/near_zero`` the share with ``|w| < threshold``, ``weights/l1`` ``sum |w|``,
    ``weights/l2`` ``sqrt(sum w^2)``, and ``weights/log10_hist`` the counts of ``log10 |w|``
    in the bins ``(-inf, e_0), [e_0, e_1), ..., [e_last, inf)``.
    """
    cut = jnp.asarray(edges, jnp.float32)

    def factory(model: nn.Module, config: StudyConfig,
                ds: Dataset) -> Callable[[State], dict[str, jax.Array]]:
        def fn(state: State) -> dict[str, jax.Array]:
            leaves = [v for path, v in jax.tree_util.tree_leaves_with_path(state["params"])
                      if _key(path[-1]) == "kernel" and _key(path[0]) != "head"]
            w = jnp.abs(jnp.concatenate([v.ravel() for v in leaves]))
            logs = jnp.log10(jnp.maximum(w, 1e-30))
            bins = jnp.searchsorted(cut, logs, side="right")
            return {"weights/near_zero": jnp.mean(w < threshold), "weights/l1": jnp.sum(w),
                    "weights/l2": jnp.sqrt(jnp.sum(w**2)),
                    "weights/log10_hist": jnp.bincount(bins, length=len(edges) + 1)}
        return fn
    return factory


def _key(entry: Any) -> str:
    return str(getattr(entry, "key", entry))


def preactivations(model: nn.Module, variables: dict[str, Any], x: jax.Array) -> dict[str, Any]:
    """The input of each hidden block's nonlinearity in training mode, by block name.

    That is the norm's output when the block has an activation norm placed before the
    activation, else the (possibly weight-normalized) linear layer's output.
    """
    def wanted(module: nn.Module, method: str) -> bool:
        return method == "__call__" and module.name in ("norm", "linear", "weight_norm")

    _, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                           capture_intermediates=wanted)
    out = {}
    for name, sub in state["intermediates"].items():
        if not name.startswith("layer_"):
            continue
        for source in ("norm", "weight_norm", "linear"):
            if source in sub and "__call__" in sub[source]:
                out[name] = sub[source]["__call__"][0]
                break
    return out


def input_quantile_probe(num_examples: int = 512, num_units: int = 16,
                         quantiles: Sequence[float] = (0.15, 0.5, 0.85)) -> Probe:
    """Quantiles on a fixed batch, as (units, quantiles), of each hidden block's

    * ``input_q/<layer>``: nonlinearity's input (after the norm, if any; Ioffe & Szegedy
      2015, Figure 1), and
    * ``output_q/<layer>``: output, which is the next layer's input (the distribution
      Santurkar et al. 2018 follow; a norm's output is normalized by construction, this
      one is not).

    Spatial positions (CNN) count as samples; the first ``num_units`` units are kept.
    """
    qs = jnp.asarray(quantiles, jnp.float32)

    def factory(model: nn.Module, config: StudyConfig,
                ds: Dataset) -> Callable[[State], dict[str, jax.Array]]:
        x, _ = _batch(ds, num_examples)
        activation = ACTIVATIONS[config.model.activation]

        def fn(state: State) -> dict[str, jax.Array]:
            out = {}
            for name, h in preactivations(model, _variables(state), x).items():
                h = h.reshape(-1, h.shape[-1])[:, :num_units]
                out[f"input_q/{name}"] = jnp.quantile(h, qs, axis=0).T
                out[f"output_q/{name}"] = jnp.quantile(activation(h), qs, axis=0).T
            return out
        return fn
    return factory


def landscape_probe(factors: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                    batch_size: int | None = None) -> Probe:
    """Loss and gradient change along the gradient, at steps ``eta = factor * lr``.

    Returns ``landscape/eta``, ``landscape/loss`` and ``landscape/grad_change`` (one entry per
    factor: ``L(theta - eta g)``, ``||grad L(theta - eta g) - g||``) and ``landscape/grad_norm``
    (``||g||``), on one fixed training batch (BatchNorm in training mode); summarize them with
    :func:`experiments.studies.metrics.landscape_summary`.
    """
    f = jnp.asarray(factors, jnp.float32)

    def factory(model: nn.Module, config: StudyConfig,
                ds: Dataset) -> Callable[[State], dict[str, jax.Array]]:
        x, y = _batch(ds, batch_size or config.batch_size)

        def fn(state: State) -> dict[str, jax.Array]:
            loss = jax.value_and_grad(lambda p: _train_loss(model, state, p, x, y))
            _, g = loss(state["params"])
            etas = f * state["hparams"]["learning_rate"]

            def at(eta: jax.Array) -> tuple[jax.Array, jax.Array]:
                moved = jax.tree_util.tree_map(lambda p, d: p - eta * d, state["params"], g)
                value, g2 = loss(moved)
                diff = jax.tree_util.tree_map(lambda a, b: a - b, g2, g)
                return value, optax.global_norm(diff)

            values, changes = jax.vmap(at)(etas)
            return {"landscape/eta": etas, "landscape/loss": values,
                    "landscape/grad_change": changes, "landscape/grad_norm": optax.global_norm(g)}
        return fn
    return factory


def _bn_recorder(records: dict[tuple[str, ...], normjax.Moments]) -> Callable[..., Any]:
    """Interceptor: the input moments of every normjax ``BatchNorm`` call, by module path."""
    def interceptor(next_fun: Callable[..., Any], args: tuple, kwargs: dict,
                    context: Any) -> Any:
        module = context.module
        if isinstance(module, BatchNorm) and context.method_name == "__call__":
            x = jnp.asarray(args[0])
            records[tuple(module.scope.path)] = normjax.moments(x, tuple(range(x.ndim - 1)))
        return next_fun(*args, **kwargs)
    return interceptor


def precise_batch_stats(model: nn.Module, variables: dict[str, Any],
                        batches: jax.Array) -> dict[str, Any]:
    """``variables["batch_stats"]`` with every BatchNorm's ``mean``/``var`` replaced by the
    statistics of its inputs pooled exactly over ``batches (K, b, ...)`` in training mode
    (weights frozen; :func:`normjax.precise_moments`).  ``count`` is left as it is.
    """
    def stats_fn(batch: jax.Array) -> dict[tuple[str, ...], normjax.Moments]:
        records: dict[tuple[str, ...], normjax.Moments] = {}
        with nn.intercept_methods(_bn_recorder(records)):
            model.apply(variables, batch, train=True, mutable=["batch_stats"])
        return records

    pooled = normjax.precise_moments(stats_fn, batches)
    stats = jax.tree_util.tree_map(lambda a: a, variables["batch_stats"])  # a copy to edit
    for path, m in pooled.items():
        node = stats
        for key in path:
            node = node[key]
        node["mean"], node["var"] = m.mean, m.var
    return stats


def precise_bn_probe(num_batches: int = 20) -> Probe:
    """``precise/test_accuracy``, ``precise/test_loss``: eval mode with Precise BN statistics.

    The running ``mean``/``var`` of every BatchNorm are replaced by the statistics pooled
    exactly over ``num_batches`` training batches of the training batch size, run in training
    mode with the weights frozen; then the whole test set is evaluated in eval mode.
    """
    def factory(model: nn.Module, config: StudyConfig,
                ds: Dataset) -> Callable[[State], dict[str, jax.Array]]:
        b = config.batch_size
        k = max(1, min(num_batches, len(ds.x_train) // b))
        x, _ = _batch(ds, k * b)
        batches = x.reshape(k, b, *x.shape[1:])
        x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)

        def fn(state: State) -> dict[str, jax.Array]:
            variables = _variables(state)
            stats = precise_batch_stats(model, variables, batches)
            logits = model.apply({**variables, "batch_stats": stats}, x_test, train=False)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_test)
            acc = jnp.mean((jnp.argmax(logits, -1) == y_test).astype(jnp.float32))
            return {"precise/test_accuracy": acc, "precise/test_loss": ce.mean()}
        return fn
    return factory


class ProbeHook(Hook):
    """Runs ``probe`` on every run's state at init and after each chunk; rows go to
    ``probes.jsonl`` in ``workdir``.

    ``every`` probes every ``every``-th chunk only (step 0 and the last chunk are always
    probed).
    """

    def __init__(self, config: ml_collections.ConfigDict | StudyConfig, ds: Dataset,
                 workdir: str | Path, probe: Probe, *, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.config, self.ds, self.workdir = typed_config(config), ds, Path(workdir)
        self.probe, self.every = probe, every
        self.log = MetricsLog(self.workdir / "probes.jsonl")
        self._fns: dict[str, Callable[[State], dict[str, jax.Array]]] = {}
        rows = read_jsonl(self.log.path) if self.log.path.exists() else []
        self._recorded = {(r["technique"], r["step"]) for r in rows}

    def _fn(self, label: str) -> Callable[[State], dict[str, jax.Array]]:
        if label not in self._fns:
            fn = self.probe(deterministic_model(self.config, label, self.ds), self.config, self.ds)
            self._fns[label] = jax.jit(jax.vmap(fn))
        return self._fns[label]

    def record(self, label: str, state: Any, step: int) -> None:
        """Probe every run of ``label`` in ``state`` (a TrainState or its state dict) and
        append the rows of ``step``, unless that step is recorded already."""
        if (label, step) in self._recorded:
            return
        with jax.numpy_dtype_promotion("standard"):
            values = jax.device_get(self._fn(label)(flax.serialization.to_state_dict(state)))
        grid = make_grid(self.config, label)
        rows = []
        for r in range(grid.num_runs):
            row = {"technique": label, "cell": grid.labels[int(grid.cell[r])],
                   "seed": int(grid.seeds[r]), "step": step}
            row.update({k: np.asarray(v[r]).tolist() for k, v in values.items()})
            rows.append(row)
        self.log.append(rows)
        self._recorded.add((label, step))

    def init(self, technique: str, state: TrainState) -> TrainState:
        self.record(technique, state, 0)
        return state

    def chunk(self, technique: str, step: int, state: TrainState) -> None:
        chunk = -(-step // self.config.log_every)
        if chunk % self.every == 0 or step >= self.config.steps:
            self.record(technique, state, step)

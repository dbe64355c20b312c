"""Pure training and evaluation for one technique, written for one run and vmapped over runs.

A *run* is one seed at one point of the hyperparameter sweep.  Everything that differs between
runs is data in :class:`TrainState` (the seed and the scalar hyperparameters ``learning_rate``,
``weight_decay``, ``dropout``, ``l1``, ``l2``, ``init_scale``), so one compiled program trains all
runs at once under ``jax.vmap``.  Randomness is derived from the seed, never carried::

    init key     = fold_in(PRNGKey(seed), 0)
    data order   = permutation(fold_in(fold_in(PRNGKey(seed), 1), epoch), num_train)
    dropout key  = fold_in(fold_in(PRNGKey(seed), 2), step)

so a chunk of steps is one ``lax.scan`` (:meth:`Experiment.train_chunk`) that draws each batch's
indices on device.  :meth:`Experiment.train_step` takes the batch as an argument and keeps no
Python-side state; the state buffers are donated.  With ``Experiment.parallel`` the batch is
split over the devices of a data mesh and BatchNorm statistics are global or per device
(:mod:`experiments.parallel`).

Loss: ``CE(logits, y) + l1 * sum|w| + l2 * 1/2 sum w^2`` (kernels only, ``normjax`` penalties).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

import normjax
from experiments.dataset import Dataset
from experiments.extensions import FactoryModel
from experiments.imports import resolve_object
from experiments.models import CNN, MLP, kernel_init_name
from experiments.optim import make_optimizer
from experiments.parallel import DataParallel, apply_per_device
from experiments.registry import build_norm
from experiments.typed_config import StudyConfig, TechniqueConfig

__all__ = ["EvalSet", "Experiment", "TrainState", "batch_indices", "build_model"]

PyTree = Any


class TrainState(NamedTuple):
    """Everything one run carries from step to step (a pytree of arrays)."""

    step: jax.Array  # int32 scalar: completed steps
    params: PyTree
    batch_stats: PyTree  # {} when the model has no running statistics
    opt_state: PyTree
    seed: jax.Array  # uint32 scalar
    hparams: dict[str, jax.Array]  # float32 scalars, see the module docstring


class EvalSet(NamedTuple):
    """An eval split cut into batches: x (B, b, ...), y (B, b), weight (B, b) (0 = padding)."""

    x: jax.Array
    y: jax.Array
    weight: jax.Array


def build_model(config: StudyConfig, tech: TechniqueConfig, *,
                num_classes: int, use_dropout: bool,
                input_shape: tuple[int, ...] = ()) -> nn.Module:
    """The MLP or CNN of ``config.model`` (or the model of ``model.factory``, see
    :mod:`experiments.extensions`) with the norm of technique ``tech``."""
    m = config.model
    options = dict(tech.norm_options)
    if m.factory:
        return FactoryModel(resolve_object(m.factory, "model.factory"), dict(m.options),
                            build_norm(tech.norm, options), float(tech.dropout), num_classes,
                            tuple(input_shape))
    kwargs = {"num_classes": num_classes, "norms": build_norm(tech.norm, options),
              "depth": m.depth, "width": m.width, "activation": m.activation,
              "norm_position": m.norm_position, "use_dropout": use_dropout,
              "dropout_kind": tech.dropout_kind,
              "kernel_init": kernel_init_name(m.kernel_init, m.activation)}
    if m.kind == "cnn":
        return CNN(**kwargs, kernel_size=m.kernel_size, stride=m.stride, conv_impl=m.conv_impl)
    return MLP(**kwargs)


def deterministic_model(config: StudyConfig, label: str, ds: Dataset) -> nn.Module:
    """Technique ``label``'s model on ``ds`` without dropout layers, for measurements and
    data-dependent init (probes and :class:`experiments.data_init.DataInit`)."""
    return build_model(config, config.techniques[label], num_classes=ds.num_classes,
                       use_dropout=False, input_shape=tuple(ds.input_shape))


def batch_indices(key: jax.Array, step: jax.Array, num_examples: int,
                  batch_size: int) -> jax.Array:
    """Indices of batch ``step``: epoch ``e = step // (N // b)`` is a fresh permutation.

    The last ``N mod b`` examples of each shuffled epoch are dropped.
    """
    per_epoch = num_examples // batch_size
    epoch, offset = step // per_epoch, step % per_epoch
    order = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
    return lax.dynamic_slice_in_dim(order, offset * batch_size, batch_size)


def _run_key(seed: jax.Array, purpose: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), purpose)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example cross-entropy (float32) and correctness."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return ce, (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def _scale_kernels(params: PyTree, scale: jax.Array) -> PyTree:
    """Multiply every ``kernel`` leaf (Dense/Conv weights) by ``scale`` (``model.init_scale``)."""
    def fn(path: tuple, leaf: jax.Array) -> jax.Array:
        name = getattr(path[-1], "key", None)
        return leaf * scale.astype(leaf.dtype) if name == "kernel" else leaf
    return jax.tree_util.tree_map_with_path(fn, params)


@dataclass(frozen=True)
class Experiment:
    """One technique's model, optimizer and data sizes; its methods are pure, single-run."""

    config: StudyConfig
    model: nn.Module
    input_shape: tuple[int, ...]
    num_train: int
    use_l1: bool = False
    use_l2: bool = False
    parallel: DataParallel | None = None  # None: one device, no sharding

    def _optimizer(self, hp: dict[str, jax.Array]) -> optax.GradientTransformation:
        return make_optimizer(self.config.optimizer, steps=self.config.steps,
                              learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"])

    def init(self, seed: jax.Array, hparams: dict[str, jax.Array]) -> TrainState:
        """Initial state of the run with ``seed`` and scalar ``hparams``."""
        x = jnp.zeros((1, *self.input_shape), jnp.float32)
        variables = self.model.init(_run_key(seed, 0), x, train=False)
        params = _scale_kernels(variables["params"], hparams["init_scale"])
        opt_state = self._optimizer(hparams).init(params)
        return TrainState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}),
                          opt_state, seed, hparams)

    def _variables(self, state: TrainState, params: PyTree) -> dict[str, PyTree]:
        return {"params": params, **({"batch_stats": state.batch_stats}
                                     if state.batch_stats else {})}

    def _penalty(self, params: PyTree, hp: dict[str, jax.Array]) -> jax.Array:
        total = jnp.zeros((), jnp.float32)
        if self.use_l1:
            total = total + hp["l1"] * normjax.l1_penalty(params)
        if self.use_l2:
            total = total + hp["l2"] * normjax.l2_penalty(params)
        return total

    def _loss(self, params: PyTree, state: TrainState, batch: tuple[jax.Array, jax.Array]
              ) -> tuple[jax.Array, tuple[dict[str, jax.Array], PyTree]]:
        x, y = batch
        key = jax.random.fold_in(_run_key(state.seed, 2), state.step)
        variables = self._variables(state, params)

        def apply(x: jax.Array, key: jax.Array) -> tuple[jax.Array, PyTree]:
            return self.model.apply(variables, x, train=True, rngs={"dropout": key},
                                    dropout_rate=state.hparams["dropout"],
                                    mutable=["batch_stats", "intermediates"])

        per_device = self.parallel is not None and self.parallel.groups > 1
        logits, mutated = (apply_per_device(apply, x, key, self.parallel)
                           if per_device and state.batch_stats else apply(x, key))
        ce, correct = _cross_entropy(logits, y)
        penalty = self._penalty(params, state.hparams)
        objective = jnp.mean(ce) + penalty
        metrics = {"train/objective": objective, "train/batch_loss": jnp.mean(ce),
                   "train/batch_accuracy": jnp.mean(correct), "train/penalty": penalty,
                   **_activation_stats(mutated.get("intermediates", {}))}
        return objective, (metrics, mutated.get("batch_stats", {}))

    def train_step(self, state: TrainState, batch: tuple[jax.Array, jax.Array]
                   ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One optimizer step on ``batch = (x, y)``; returns the new state and step metrics."""
        grads, (metrics, batch_stats) = jax.grad(self._loss, has_aux=True)(
            state.params, state, batch)
        updates, opt_state = self._optimizer(state.hparams).update(
            grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, **_grad_norms(grads),
                   "train/learning_rate": opt_state.hyperparams["learning_rate"]}
        new_state = state._replace(step=state.step + 1, params=params,
                                   batch_stats=batch_stats, opt_state=opt_state)
        return new_state, metrics

    def data_step(self, state: TrainState, x: jax.Array, y: jax.Array
                  ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One step on the run's next batch of the training set ``(x, y)``, drawn on device."""
        idx = batch_indices(_run_key(state.seed, 1), state.step, self.num_train,
                            self.config.batch_size)
        batch = (x[idx], y[idx])
        if self.parallel is not None:  # split the batch over the devices
            batch = self.parallel.shard_batch(batch)
        return self.train_step(state, batch)

    def train_chunk(self, state: TrainState, x: jax.Array, y: jax.Array, num_steps: int
                    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """``num_steps`` steps as one ``lax.scan``; metrics are stacked per step."""
        return lax.scan(lambda s, _: self.data_step(s, x, y), state, None, length=num_steps)

    def _eval_pass(self, state: TrainState, data: EvalSet, *,
                   use_running_average: bool) -> tuple[jax.Array, jax.Array]:
        """Mean loss and accuracy over ``data`` with dropout off (train=False)."""
        def body(carry: jax.Array, batch: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
            x, y, w = batch
            logits, _ = self.model.apply(self._variables(state, state.params), x, train=False,
                                         use_running_average=use_running_average,
                                         mutable=["batch_stats"])
            ce, correct = _cross_entropy(logits, y)
            sums = jnp.stack([jnp.sum(ce * w), jnp.sum(correct * w), jnp.sum(w)])
            return carry + sums, None

        sums, _ = lax.scan(body, jnp.zeros(3, jnp.float32), tuple(data))
        return sums[0] / sums[2], sums[1] / sums[2]

    def evaluate(self, state: TrainState, sets: dict[str, EvalSet]) -> dict[str, jax.Array]:
        """``<split>/loss`` and ``<split>/accuracy`` per eval set.

        Sets named ``<split>_batch_stats`` are evaluated with BatchNorm using the statistics of
        each eval batch instead of the running averages (the train-mode normalization).
        """
        out = {}
        for name, data in sets.items():
            batch_mode = name.endswith("_batch_stats")
            loss, acc = self._eval_pass(state, data, use_running_average=not batch_mode)
            out[f"{name}/loss"], out[f"{name}/accuracy"] = loss, acc
        return out


def _activation_stats(intermediates: PyTree) -> dict[str, jax.Array]:
    """``act_mean/<layer>`` and ``act_std/<layer>`` of each block's sown activation."""
    out = {}
    for layer, sown in intermediates.items():
        act = sown["activation"][0].astype(jnp.float32)
        out[f"act_mean/{layer}"] = jnp.mean(act)
        out[f"act_std/{layer}"] = jnp.std(act)
    return out


def _grad_norms(grads: PyTree) -> dict[str, jax.Array]:
    """``grad_norm/<layer>`` (global L2 norm of each top-level subtree) and the total."""
    out = {f"grad_norm/{name}": optax.global_norm(sub) for name, sub in grads.items()}
    out["grad_norm/total"] = optax.global_norm(grads)
    return out

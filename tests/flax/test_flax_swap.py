"""Swapping flax's layers for normjax's is a one-line import change that trains identically.

Each model below is written once against a namespace ``nn`` (or ``nnx``) and built twice: with
``from flax import linen as nn`` and with ``from normjax import linen as nn`` (which is
flax.linen with BatchNorm, LayerNorm, GroupNorm, Dropout, ... replaced). The model bodies use
flax's defaults as they are (flax's BatchNorm keeps its one-pass variance); on this
well-conditioned data both variance formulas agree far below the 1e-5 tolerance.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import flax.linen as flax_linen
import jax
import numpy as np
import optax
import pytest
from flax import nnx as flax_nnx

import normjax.linen as normjax_linen
import normjax.nnx as normjax_nnx

STEPS = 20


def make_mlp(nn: ModuleType) -> Any:
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array, train: bool) -> jax.Array:
            x = nn.Dense(32)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
            x = nn.Dropout(0.2, deterministic=not train)(x)
            x = nn.Dense(32)(x)
            x = nn.LayerNorm()(x)
            x = nn.relu(x)
            return nn.Dense(10)(x)

    return MLP()


def make_cnn(nn: ModuleType) -> Any:
    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array, train: bool) -> jax.Array:
            x = nn.Conv(8, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
            x = nn.Conv(8, (3, 3), strides=2)(x)
            x = nn.GroupNorm(num_groups=4)(x)
            x = nn.relu(x)
            x = x.mean(axis=(1, 2))
            x = nn.Dropout(0.1, deterministic=not train)(x)
            return nn.Dense(10)(x)

    return CNN()


def synthetic_batches(input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Two batches of Gaussian inputs labelled by a random linear teacher, cycled for
    ``STEPS`` steps (small enough to memorize, so the loss falls within 20 steps).

    NumPy arrays: indexing them per step compiles nothing.
    """
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(2, *input_shape)).astype(np.float32)
    teacher = rng.normal(size=(int(np.prod(input_shape[1:])), 10))
    ys = np.argmax(xs.reshape(2, input_shape[0], -1) @ teacher, axis=-1).astype(np.int32)
    cycle = np.arange(STEPS) % 2
    return xs[cycle], ys[cycle]


def train_linen(model: Any, tx: optax.GradientTransformation, xs: np.ndarray,
                ys: np.ndarray) -> tuple[np.ndarray, jax.Array, Any]:
    """``STEPS`` jitted training steps; returns the loss curve, the eval logits after, and
    the variable tree after training (names, shapes, dtypes)."""
    @jax.jit
    def init(x: jax.Array) -> tuple[Any, ...]:
        variables = model.init(jax.random.key(0), x, train=False)
        return variables["params"], variables["batch_stats"], tx.init(variables["params"])

    params, stats, opt_state = init(xs[0])

    @jax.jit
    def step(params: Any, stats: Any, opt_state: Any, i: int, x: jax.Array,
             y: jax.Array) -> tuple[Any, ...]:
        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            logits, updates = model.apply(
                {"params": params, "batch_stats": stats}, x, train=True,
                rngs={"dropout": jax.random.fold_in(jax.random.key(1), i)},
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss

    losses = []
    for i in range(STEPS):
        params, stats, opt_state, loss = step(params, stats, opt_state, i, xs[i], ys[i])
        losses.append(loss)
    logits = jax.jit(lambda p, s: model.apply({"params": p, "batch_stats": s}, xs[0],
                                              train=False))(params, stats)
    tree = jax.tree.map(lambda a: (a.shape, a.dtype), {"params": params, "batch_stats": stats})
    return np.asarray(losses), logits, tree


@pytest.mark.parametrize(
    "make_model, input_shape, tx",
    [
        (make_mlp, (32, 16), optax.sgd(0.1, momentum=0.9)),
        (make_cnn, (8, 8, 8, 3), optax.sgd(0.1, momentum=0.9, nesterov=True)),
    ],
    ids=["mlp", "cnn"],
)
def test_linen_models_train_identically(make_model: Any, input_shape: tuple[int, ...],
                                        tx: optax.GradientTransformation) -> None:
    xs, ys = synthetic_batches(input_shape)
    flax_losses, flax_eval, flax_tree = train_linen(make_model(flax_linen), tx, xs, ys)
    ours_losses, ours_eval, ours_tree = train_linen(make_model(normjax_linen), tx, xs, ys)
    assert ours_tree == flax_tree  # the identical variable tree: names, shapes, dtypes
    assert flax_losses[-4:].mean() < 0.8 * flax_losses[:4].mean()  # it does learn
    np.testing.assert_allclose(ours_losses, flax_losses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours_eval, flax_eval, rtol=1e-4, atol=1e-4)


def make_nnx_mlp(nnx: ModuleType) -> Any:
    class MLP(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.linear1 = nnx.Linear(16, 32, rngs=rngs)
            self.bn = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
            self.dropout = nnx.Dropout(0.2, rngs=rngs)
            self.linear2 = nnx.Linear(32, 32, rngs=rngs)
            self.ln = nnx.LayerNorm(32, rngs=rngs)
            self.out = nnx.Linear(32, 10, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            x = self.dropout(nnx.relu(self.bn(self.linear1(x))))
            return self.out(nnx.relu(self.ln(self.linear2(x))))

    return MLP(nnx.Rngs(params=0, dropout=1))


def train_nnx(nnx: ModuleType, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, jax.Array]:
    model = make_nnx_mlp(nnx)
    optimizer = nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)

    @nnx.jit
    def step(model: Any, optimizer: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        def loss_fn(model: Any) -> jax.Array:
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    losses = [step(model, optimizer, x, y) for x, y in zip(xs[:8], ys[:8], strict=True)]
    model.eval()
    tree = {path: (type(v).__name__, v.shape, v.dtype)
            for path, v in nnx.to_flat_state(nnx.state(model))}
    return np.asarray(losses), model(xs[0]), tree


def test_nnx_model_trains_identically() -> None:
    xs, ys = synthetic_batches((32, 16))
    flax_losses, flax_eval, flax_tree = train_nnx(flax_nnx, xs, ys)
    ours_losses, ours_eval, ours_tree = train_nnx(normjax_nnx, xs, ys)
    assert ours_tree == flax_tree  # the identical state: paths, variable types, shapes
    assert flax_losses[-3:].mean() < flax_losses[:3].mean()
    np.testing.assert_allclose(ours_losses, flax_losses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours_eval, flax_eval, rtol=1e-4, atol=1e-4)

"""Data-dependent initialization of WeightNorm (Salimans & Kingma 2016, Sec. 3) for the runner.

For each weight-normalized hidden layer, in order from the input, the pre-activations
``t = g * (v . x) / ||v|| + b`` on a batch of training data are standardized per unit::

    g <- g / sigma[t],   b <- (b - mu[t]) / sigma[t]

so every layer starts with zero-mean, unit-variance pre-activations on that batch (the later
layers see the already re-initialized earlier ones).  ``mu`` and ``sigma`` are computed with
:func:`normjax.moments` over every axis but the features (batch and, for a CNN, positions).

:class:`DataInit` is a runner hook (:mod:`experiments.hooks`) that applies such a transform to
the initial parameters of chosen techniques, in memory, before their first step, so training,
metrics and reports are the runner's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import normjax
from experiments.data import Dataset
from experiments.hooks import Hook
from experiments.train import TrainState, deterministic_model
from experiments.typed_config import StudyConfig, typed_config

__all__ = ["SCALE_KEY", "DataInit", "weight_norm_data_init"]

SCALE_KEY = "linear/kernel/scale"  # the WeightNorm scale of a block's linear layer
PyTree = Any


def weight_norm_data_init(model: nn.Module, params: PyTree, x: jax.Array, *,
                          epsilon: float = 1e-6) -> PyTree:
    """``params`` with every ``layer_<i>/weight_norm`` re-initialized on the batch ``x``.

    Raises ``ValueError`` if the model has no weight-normalized block with a bias.
    """
    blocks = sorted((k for k, v in params.items() if k.startswith("layer_")
                     and SCALE_KEY in v.get("weight_norm", {})), key=lambda k: int(k[6:]))
    if not blocks or any("bias" not in params[k]["linear"] for k in blocks):
        raise ValueError("weight_norm_data_init needs blocks 'layer_<i>' with a weight_norm "
                         f"scale {SCALE_KEY!r} and a linear bias (technique norm='weight')")
    params = jax.tree_util.tree_map(lambda a: a, params)  # a copy we may edit

    def wanted(module: nn.Module, method: str) -> bool:
        return module.name == "weight_norm" and method == "__call__"

    for name in blocks:
        _, state = model.apply({"params": params}, x, train=False, mutable=["intermediates"],
                               capture_intermediates=wanted)
        t = state["intermediates"][name]["weight_norm"]["__call__"][0]
        m = normjax.moments(t, tuple(range(t.ndim - 1)))
        inv = jax.lax.rsqrt(m.var + epsilon)
        block = params[name]
        block["weight_norm"][SCALE_KEY] = block["weight_norm"][SCALE_KEY] * inv
        block["linear"]["bias"] = (block["linear"]["bias"] - m.mean) * inv
    return params


class DataInit(Hook):
    """Hook: re-initialize the params of the techniques ``labels`` as
    ``transform(model, params, x)`` on every run, where ``x`` is a fixed batch of
    ``num_examples`` training inputs (the same for every run and every invocation)."""

    def __init__(self, config: ml_collections.ConfigDict | StudyConfig, ds: Dataset,
                 labels: Sequence[str],
                 transform: Callable[[nn.Module, PyTree, jax.Array], PyTree], *,
                 num_examples: int = 512) -> None:
        self.config, self.labels, self.transform = typed_config(config), tuple(labels), transform
        idx = np.random.default_rng(0).permutation(len(ds.x_train))[:num_examples]
        self.x = jnp.asarray(ds.x_train[idx])
        self.ds = ds

    def init(self, technique: str, state: TrainState) -> TrainState:
        if technique not in self.labels:
            return state
        model = deterministic_model(self.config, technique, self.ds)
        with jax.numpy_dtype_promotion("standard"):
            params = jax.jit(jax.vmap(lambda p: self.transform(model, p, self.x)))(state.params)
        return state._replace(params=params)

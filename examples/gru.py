"""A GRU sequence classifier in plain flax, with its norm injected (model factory).

Reads an input ``(T, C)`` as ``T`` time steps of ``C`` features (MNIST-1D: 40 steps of one
value) and is run by the experiments runner through its model factory
(``config.model.factory = "examples.gru:gru"``; see ``configs/claim_layer_norm_sequences.py``).
Architecture::

    dense(width) -> norm -> relu            at every time step
    GRU(width) over the T steps -> norm     (flax.linen.RNN of a GRUCell)
    last step's output -> dropout -> dense(num_classes)

``norm()`` makes the technique's layer; it normalizes the feature axis of ``(B, T, width)``
arrays, so LayerNorm normalizes each time step of each sequence on its own, and BatchNorm
pools the batch and the time steps (one mean and variance per feature), the usual way of
batch-normalizing sequence models (Laurent et al. 2016; Ba et al. 2016 compare the two).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

__all__ = ["GRUClassifier", "gru"]


class GRUClassifier(nn.Module):
    width: int
    num_classes: int
    norm: Callable[..., nn.Module]
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(self.norm()(nn.Dense(self.width)(x)))
        x = self.norm()(nn.RNN(nn.GRUCell(self.width))(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x[:, -1])
        return nn.Dense(self.num_classes)(x)


def gru(*, norm: Callable[..., nn.Module], dropout_rate: float, num_classes: int,
        input_shape: tuple[int, ...], width: int = 32) -> GRUClassifier:
    """The model factory: a GRU of ``width`` units over inputs ``(T, C)``."""
    if len(input_shape) != 2:
        raise ValueError(f"gru needs (time, features) inputs, got input_shape {input_shape}")
    return GRUClassifier(width, num_classes, norm, dropout_rate)

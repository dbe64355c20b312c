"""A researcher's own model, dataset and technique, named in a config.

**Model factory** (``config.model.factory = "mypkg.models:resnet18"``, options in
``config.model.options``, each settable as ``--config.model.options.NAME=VALUE``)::

    def resnet18(*, norm, dropout_rate, num_classes, input_shape, **options) -> nn.Module

The returned Flax module is called as ``module(x, train=bool)`` and returns logits. ``norm()``
(optionally ``norm(name=...)``) makes a fresh layer of the technique being run (BatchNorm,
LayerNorm, ... with the technique's options; an identity for ``norm='none'``), with its mode
already bound: running averages in evaluation, batch statistics in training and in the
runner's "BN batch stats" evaluation. This is how flax's ImageNet example injects ``norm``.
``dropout_rate`` is the technique's ``dropout`` (a Python float, so ``sweep.dropout`` is not
available to factory models), ``input_shape`` the per-example shape, e.g. ``(28, 28, 1)``.
Techniques that reparametrize weights (``weight``, ``spectral``, ...) wrap the shipped models'
linear layers and are refused for factory models.

**Dataset** (``config.dataset.name`` a registered name or an import path
``"mypkg.data:load"``; options in ``config.dataset.options``): see
:func:`experiments.data.register_dataset`.

**Technique**: :func:`experiments.registry.register_norm` in a module the config imports.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax

from experiments.errors import ConfigError
from experiments.imports import is_import_path, resolve_object
from experiments.registry import NormContext, NormLayers

__all__ = ["FactoryModel", "InjectedNorm", "is_import_path", "resolve_object"]


class _Identity(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class InjectedNorm(nn.Module):
    """The technique's normalization layer, built for the activations it first sees."""

    build: Callable[..., nn.Module]
    use_running_average: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ctx = NormContext(ndim=x.ndim, features=x.shape[-1],
                          use_running_average=self.use_running_average)
        return self.build(ctx, name="layer")(x)


class FactoryModel(nn.Module):
    """A user's model from ``model.factory``, called the way the runner calls its own models.

    ``__call__(x, train, dropout_rate=None, use_running_average=None)``: the runner's traced
    ``dropout_rate`` is ignored (the factory got the technique's rate), and
    ``use_running_average`` (default ``not train``) chooses the injected norms' mode.
    """

    factory: Callable[..., nn.Module]
    options: dict[str, Any]
    norms: NormLayers
    dropout_rate: float
    num_classes: int
    input_shape: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, dropout_rate: Any = None,
                 use_running_average: bool | None = None) -> jax.Array:
        mode = (not train) if use_running_average is None else use_running_average
        norm = (partial(InjectedNorm, self.norms.norm, mode) if self.norms.norm is not None
                else _Identity)
        model = self.factory(norm=norm, dropout_rate=self.dropout_rate,
                             num_classes=self.num_classes, input_shape=self.input_shape,
                             **self.options)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model.factory returned {type(model).__name__}, not a Flax "
                              "linen Module")
        return model(x, train=train)

"""The research normalizations of :mod:`normjax.linen`, registered by name for the runner.

Importing :mod:`experiments.registry` registers these as well, so a config can say e.g.
``technique("ghost_batch", virtual_batch_size=8)``.  Activation norms, applied after each hidden
linear layer (options with their defaults; ``centers``: the linear layer before drops its bias):

* ``ghost_batch``: Ghost BatchNorm (Hoffer et al. 2017, :class:`normjax.linen.GhostBatchNorm`),
  BN per virtual batch; ``virtual_batch_size=16, momentum=0.9, epsilon=1e-5``; centers.
* ``batch_renorm``: Batch Renormalization (Ioffe 2017, :class:`normjax.linen.BatchRenorm`),
  ``(x - mu_B) / sigma_B * r + d`` with ``r``, ``d`` clipped to ``r_max``, ``d_max``;
  ``r_max=3.0, d_max=5.0, momentum=0.9, epsilon=1e-5``; centers.
* ``decorrelated_batch``: Decorrelated BN (Huang et al. 2018,
  :class:`normjax.linen.DecorrelatedBatchNorm`), ZCA whitening per group of channels;
  ``group_size=16, momentum=0.9, epsilon=1e-5``; centers.
* ``frn``: Filter Response Normalization + TLU (Singh & Krishnan 2019,
  :class:`normjax.linen.FilterResponseNorm`); ``epsilon=1e-6, learned_epsilon=True``.
* ``evonorm_b0``: EvoNorm-B0 (Liu et al. 2020, :class:`normjax.linen.EvoNormB0`), CNN only;
  ``momentum=0.9, epsilon=1e-5``.
* ``evonorm_s0``: EvoNorm-S0 (Liu et al. 2020, :class:`normjax.linen.EvoNormS0`);
  ``num_groups=8, epsilon=1e-5``.
* ``switchable``: Switchable Normalization (Luo et al. 2018,
  :class:`normjax.linen.SwitchableNorm`), learned mix of IN, LN and BN statistics, CNN only;
  ``momentum=0.9, epsilon=1e-5``.  Not ``centers``: its LN term leaves part of a bias.

``momentum`` is flax's weight on the old running value (normjax's ``decay``), 0.9 as for
``batch``.  FRN+TLU and the EvoNorms are normalization-*activation* layers: the papers use them
in place of BN+ReLU, i.e. with ``model.activation="identity"``.  FRN learns its epsilon by
default (``epsilon + |eps|``), as the paper does where there are no spatial axes (the MLP).

Weight reparameterizations (wrapping each hidden Dense/Conv, ``kind="weight"``):

* ``weight_standardization``: ``W_hat = (W - mean W) / sqrt(var W + eps)`` per output feature
  over its fan-in (Qiao et al. 2019); ``scaled=True`` gives scaled WS with a learned gain,
  ``gain * gamma * (W - mean W) / sqrt(N var W)`` (Brock et al. 2021); ``gamma`` is the
  activation's constant, :func:`normjax.activation_gamma` (about 1.7129 for ReLU);
  ``scaled=False, gamma=1.0``.  Plain WS is meant to sit before a normalization layer, which
  this registry cannot combine with it (one technique per run): alone it leaves the
  pre-activations ``sqrt(fan_in)`` times larger; scaled WS is the stand-alone form.
* ``spectral``: ``W / sigma(W)`` with ``n_steps`` power iterations per call (Miyato et al.
  2018); ``n_steps=1, epsilon=1e-12``.  The power-iteration state (``u``, ``sigma``) lives in
  ``batch_stats`` and is updated whenever the caller lets ``batch_stats`` change (the training
  step); the runner's evaluation discards it, and the normalized weight is the same either
  way.

The one check that needs the batch size (Ghost BN's virtual batches must divide it) cannot run
with the others (a check sees the options, the width and the rank only): it runs when the
training step is traced, before any step runs, and raises :class:`ConfigError` naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.errors import ConfigError
from experiments.norm_types import NormContext, NormEntry
from normjax import linen as norm_layers

__all__ = ["RESEARCH_ENTRIES", "RESEARCH_NORMS"]

Options = Mapping[str, Any]

# --------------------------------------------------------------------------- option checks


def _number(options: Options, name: str, *, low: float, low_open: bool = False,
            high: float = math.inf) -> str | None:
    """An error if ``options[name]`` is not a number in ``[low, high)`` (``(low`` if open)."""
    value = options[name]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (
        value > low if low_open else value >= low) and value < high
    if ok:
        return None
    left = "(" if low_open else "["
    return f"{name} must be a number in {left}{low}, {high}), got {value!r}"


def _int(options: Options, name: str, minimum: int) -> str | None:
    value = options[name]
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return None
    return f"{name} must be an integer >= {minimum}, got {value!r}"


def _bool(options: Options, name: str) -> str | None:
    value = options[name]
    return None if isinstance(value, bool) else f"{name} must be True or False, got {value!r}"


def _first(*messages: str | None) -> str | None:
    return next((m for m in messages if m), None)


def _check_running(options: Options, features: int, ndim: int) -> str | None:
    """``momentum`` in [0, 1) and ``epsilon`` > 0 (layers with running statistics)."""
    return _first(_number(options, "momentum", low=0.0, high=1.0),
                  _number(options, "epsilon", low=0.0, low_open=True))


def _divides(options: Options, name: str, features: int, what: str) -> str | None:
    value = options[name]
    if features % value:
        return (f"{name}={value} does not divide the {features} channels of the hidden layers "
                f"(model.width); choose a {what} that divides {features}")
    return None


def _needs_spatial(norm: str, ndim: int) -> str | None:
    if ndim >= 3:
        return None
    return (f"norm {norm!r} needs spatial axes (model.kind='cnn'): its per-example statistics "
            "run over them, and MLP activations have none")


def _check_ghost(options: Options, features: int, ndim: int) -> str | None:
    bad = _int(options, "virtual_batch_size", 1)
    if bad is None and options["virtual_batch_size"] == 1 and ndim == 2:
        bad = ("virtual_batch_size=1 on MLP activations normalizes each example by itself "
               "(every output would be zero); use virtual_batch_size >= 2")
    return _first(bad, _check_running(options, features, ndim))


def _check_renorm(options: Options, features: int, ndim: int) -> str | None:
    return _first(_number(options, "r_max", low=1.0), _number(options, "d_max", low=0.0),
                  _check_running(options, features, ndim))


def _check_decorrelated(options: Options, features: int, ndim: int) -> str | None:
    return _first(_int(options, "group_size", 1) or _divides(
        options, "group_size", features, "group size"), _check_running(options, features, ndim))


def _check_frn(options: Options, features: int, ndim: int) -> str | None:
    return _first(_number(options, "epsilon", low=0.0, low_open=True),
                  _bool(options, "learned_epsilon"))


def _check_evonorm_b0(options: Options, features: int, ndim: int) -> str | None:
    return _first(_needs_spatial("evonorm_b0", ndim), _check_running(options, features, ndim))


def _check_evonorm_s0(options: Options, features: int, ndim: int) -> str | None:
    bad = _int(options, "num_groups", 1) or _divides(options, "num_groups", features,
                                                      "number of groups")
    if bad is None and ndim == 2 and features == options["num_groups"]:
        bad = (f"num_groups={features} puts one channel in each group: on MLP activations "
               "(no spatial axes) its variance is zero; use fewer groups")
    return _first(bad, _number(options, "epsilon", low=0.0, low_open=True))


def _check_switchable(options: Options, features: int, ndim: int) -> str | None:
    return _first(_needs_spatial("switchable", ndim), _check_running(options, features, ndim))


def _check_ws(options: Options, features: int, ndim: int) -> str | None:
    bad = _first(_bool(options, "scaled"), _number(options, "gamma", low=0.0, low_open=True))
    if bad is None and not options["scaled"] and options["gamma"] != 1.0:
        bad = (f"gamma={options['gamma']!r} applies to scaled weight standardization only; "
               "set scaled=True (or leave gamma at 1.0)")
    return bad


def _check_spectral(options: Options, features: int, ndim: int) -> str | None:
    return _first(_int(options, "n_steps", 1), _number(options, "epsilon", low=0.0,
                                                        low_open=True))


# --------------------------------------------------------------------------- layers


class _BatchCheckedGhostBatchNorm(norm_layers.GhostBatchNorm):
    """:class:`normjax.linen.GhostBatchNorm` whose batch-size error names the config fields."""

    def __call__(self, x: jax.typing.ArrayLike, use_running_average: bool | None = None, *,
                 mask: jax.typing.ArrayLike | None = None) -> jax.Array:
        eval_mode = nn.merge_param("use_running_average", self.use_running_average,
                                   use_running_average)
        n, size = jnp.shape(x)[self.batch_axis], self.virtual_batch_size
        if not eval_mode and n % size:
            raise ConfigError(
                f"norm 'ghost_batch': norm_options.virtual_batch_size={size} does not divide the "
                f"batch of {n} examples; make batch_size a multiple of {size} (the "
                f"test_batch_stats evaluation uses batches of min(batch_size, test-set size)) "
                f"or choose a virtual_batch_size that divides {n}")
        return super().__call__(x, use_running_average, mask=mask)


class _SpectralNormStatsWhenMutable(norm_layers.SpectralNorm):
    """:class:`normjax.linen.SpectralNorm` that updates ``u`` and ``sigma`` exactly when its
    collection is mutable (and not while initializing), so models call it as ``layer(x)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        update = not self.is_initializing() and self.is_mutable_collection(self.collection_name)
        return super().__call__(*args, update_stats=update, **kwargs)


def _ghost_batch(ctx: NormContext, *, name: str, virtual_batch_size: int, momentum: float,
                 epsilon: float) -> nn.Module:
    return _BatchCheckedGhostBatchNorm(virtual_batch_size=virtual_batch_size,
                                       use_running_average=ctx.use_running_average,
                                       momentum=momentum, epsilon=epsilon, name=name)


def _batch_renorm(ctx: NormContext, *, name: str, r_max: float, d_max: float, momentum: float,
                  epsilon: float) -> nn.Module:
    return norm_layers.BatchRenorm(use_running_average=ctx.use_running_average, r_max=r_max,
                                   d_max=d_max, momentum=momentum, epsilon=epsilon, name=name)


def _decorrelated_batch(ctx: NormContext, *, name: str, group_size: int, momentum: float,
                        epsilon: float) -> nn.Module:
    return norm_layers.DecorrelatedBatchNorm(use_running_average=ctx.use_running_average,
                                             group_size=group_size, momentum=momentum,
                                             epsilon=epsilon, name=name)


def _frn(ctx: NormContext, *, name: str, epsilon: float, learned_epsilon: bool) -> nn.Module:
    return norm_layers.FilterResponseNorm(epsilon=epsilon, learned_epsilon=learned_epsilon,
                                          name=name)


def _evonorm_b0(ctx: NormContext, *, name: str, momentum: float, epsilon: float) -> nn.Module:
    return norm_layers.EvoNormB0(use_running_average=ctx.use_running_average,
                                 momentum=momentum, epsilon=epsilon, name=name)


def _evonorm_s0(ctx: NormContext, *, name: str, num_groups: int, epsilon: float) -> nn.Module:
    return norm_layers.EvoNormS0(num_groups=num_groups, epsilon=epsilon, name=name)


def _switchable(ctx: NormContext, *, name: str, momentum: float, epsilon: float) -> nn.Module:
    return norm_layers.SwitchableNorm(use_running_average=ctx.use_running_average,
                                      momentum=momentum, epsilon=epsilon, name=name)


def _weight_standardization(layer: nn.Module, *, name: str, scaled: bool,
                            gamma: float) -> nn.Module:
    return norm_layers.WeightStandardization(layer, scaled=scaled, gamma=gamma, name=name)


def _spectral(layer: nn.Module, *, name: str, n_steps: int, epsilon: float) -> nn.Module:
    return _SpectralNormStatsWhenMutable(layer, n_steps=n_steps, epsilon=epsilon, name=name)


# --------------------------------------------------------------------------- registration

_RUNNING = {"momentum": 0.9, "epsilon": 1e-5}

#: The research variants, registered by :mod:`experiments.registry` in this order.
RESEARCH_ENTRIES: tuple[NormEntry, ...] = (
    NormEntry("ghost_batch", _ghost_batch, {"virtual_batch_size": 16, **_RUNNING},
              check=_check_ghost, centers=True),
    NormEntry("batch_renorm", _batch_renorm, {"r_max": 3.0, "d_max": 5.0, **_RUNNING},
              check=_check_renorm, centers=True),
    NormEntry("decorrelated_batch", _decorrelated_batch, {"group_size": 16, **_RUNNING},
              check=_check_decorrelated, centers=True),
    NormEntry("frn", _frn, {"epsilon": 1e-6, "learned_epsilon": True}, check=_check_frn),
    NormEntry("evonorm_b0", _evonorm_b0, dict(_RUNNING), check=_check_evonorm_b0),
    NormEntry("evonorm_s0", _evonorm_s0, {"num_groups": 8, "epsilon": 1e-5},
              check=_check_evonorm_s0),
    NormEntry("switchable", _switchable, dict(_RUNNING), check=_check_switchable),
    NormEntry("weight_standardization", _weight_standardization,
              {"scaled": False, "gamma": 1.0}, kind="weight", check=_check_ws),
    NormEntry("spectral", _spectral, {"n_steps": 1, "epsilon": 1e-12}, kind="weight",
              check=_check_spectral),
)
RESEARCH_NORMS: tuple[str, ...] = tuple(entry.name for entry in RESEARCH_ENTRIES)
"""The research variants' names, in registration order."""

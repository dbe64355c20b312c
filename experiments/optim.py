"""Optimizers and learning-rate schedules (optax), with per-run hyperparameters injected.

Every optimizer is ``optax.inject_hyperparams`` over a chain::

    [clip_by_global_norm] -> direction (sgd: g; momentum: trace; adam/adamw: scale_by_adam)
      -> add_decayed_weights(weight_decay, kernels only) -> scale by -learning_rate(step)

so the update is ``-lr(t) * (direction + weight_decay * w)``: decoupled weight decay
(Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), scaled by the learning
rate as in ``optax.adamw``.  ``adam`` and ``adamw`` are the same chain; ``adamw`` just reads
better when ``weight_decay > 0``.  ``learning_rate`` and ``weight_decay`` may be traced scalars
(one per vmapped run); the current learning rate is kept in ``opt_state.hyperparams``.

Schedules are factors in [0, 1] multiplying the peak learning rate: ``constant``; ``cosine``
(``(1 + cos(pi t / T)) / 2``); ``linear`` (``1 - t / T``), each after an optional linear warmup
from 0 over ``warmup_steps`` (``T = steps - warmup_steps``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from experiments.typed_config import OptimizerConfig
from normjax import default_penalty_mask

__all__ = ["OPTIMIZERS", "SCHEDULES", "lr_factor", "make_optimizer"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(schedule: str, *, steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """The schedule's factor ``f(t)`` in [0, 1] (see the module docstring)."""
    decay_steps = max(1, steps - warmup_steps)
    main = {"constant": lambda: optax.constant_schedule(1.0),
            "cosine": lambda: optax.cosine_decay_schedule(1.0, decay_steps),
            "linear": lambda: optax.linear_schedule(1.0, 0.0, decay_steps)}
    if schedule not in main:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if warmup_steps == 0:
        return main[schedule]()
    warmup = optax.linear_schedule(0.0, 1.0, warmup_steps)
    return optax.join_schedules([warmup, main[schedule]()], [warmup_steps])


def _direction(opt: OptimizerConfig) -> optax.GradientTransformation:
    if opt.name in ("adam", "adamw"):
        return optax.scale_by_adam()
    if opt.name == "momentum":
        return optax.trace(decay=opt.momentum)
    if opt.name == "sgd":
        return optax.identity()
    raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {opt.name!r}")


def make_optimizer(opt: OptimizerConfig, *, steps: int,
                   learning_rate: float | jax.Array,
                   weight_decay: float | jax.Array) -> optax.GradientTransformation:
    """The optimizer of ``opt`` (fields name, momentum, schedule, warmup_steps, grad_clip_norm).

    ``learning_rate`` is the peak rate; ``weight_decay`` the decoupled decay coefficient.
    """
    factor = lr_factor(opt.schedule, steps=steps, warmup_steps=opt.warmup_steps)

    def schedule(count: jax.Array) -> jax.Array:
        return learning_rate * factor(count)

    def build(learning_rate: Callable | jax.Array,
              weight_decay: jax.Array) -> optax.GradientTransformation:
        parts = [optax.clip_by_global_norm(opt.grad_clip_norm)] if opt.grad_clip_norm > 0 else []
        parts += [_direction(opt),
                  optax.add_decayed_weights(weight_decay, mask=default_penalty_mask),
                  optax.scale_by_learning_rate(learning_rate)]
        return optax.chain(*parts)

    return optax.inject_hyperparams(build)(learning_rate=schedule, weight_decay=weight_decay)

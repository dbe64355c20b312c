"""What every ``normjax.linen`` layer with parameters or running statistics shares: the
``scale``/``bias`` params in flax's order, and the ``batch_stats`` state (read, created, stored
after a training call) with flax's initialization rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import linen as nn

from normjax._checks import deprecated_name

__all__ = ["COLLECTION", "axis_name_of", "linen_scale_bias", "running_state", "store",
           "take_channel_axis", "training"]

COLLECTION = "batch_stats"


# --------------------------------------------------------------------------- shared helpers


def training(module: nn.Module, use_running_average: bool | None) -> bool:
    """Whether this call uses batch statistics (flax's ``merge_param`` rule, see the module
    docstring for the initialization rule with ``axis_name``)."""
    use_running_average = nn.merge_param(
        "use_running_average", module.use_running_average, use_running_average
    )
    return not use_running_average and not (
        module.is_initializing() and module.axis_name is not None
    )


def axis_name_of(module: nn.Module) -> Any:
    """``axis_name``, dropped while initializing (as flax's BatchNorm does)."""
    return None if module.is_initializing() else module.axis_name


def running_state(module: nn.Module, init: NamedTuple, *, optional: tuple[str, ...] = (),
                  skip: tuple[str, ...] = ()) -> tuple[Any, list[Any]]:
    """Reads (creating from ``init``) one ``batch_stats`` variable per field of ``init``.

    A field named in ``optional`` is only read where it exists and only created where the
    collection is mutable (flax checkpoints without it load as they are); a field in
    ``skip`` is never a variable. Either way a missing field takes ``init``'s value and is
    not stored. Returns the state as ``type(init)`` and the variables (``None`` for a missing
    field), for :func:`store`.
    """
    variables = []
    for name, value in zip(init._fields, init, strict=True):
        present = module.has_variable(COLLECTION, name) or module.is_mutable_collection(
            COLLECTION)
        wanted = name not in skip and (name not in optional or present)
        variables.append(module.variable(COLLECTION, name, lambda value=value: value)
                         if wanted else None)
    values = (v.value if v is not None else d for v, d in zip(variables, init, strict=True))
    return type(init)(*values), variables


def store(module: nn.Module, variables: list[Any], new: NamedTuple, train: bool) -> None:
    """Writes the new state after a training call (never while initializing)."""
    if train and not module.is_initializing():
        for variable, value in zip(variables, new, strict=True):
            if variable is not None:
                variable.value = value


def linen_scale_bias(
    module: Any,
    shape: tuple[int, ...],
    *,
    use_scale: bool,
    use_bias: bool,
    scale_init: Callable[..., Any],
    bias_init: Callable[..., Any],
    param_dtype: Any,
) -> tuple[jax.Array | None, jax.Array | None]:
    """Creates (or reads) a linen module's ``scale`` then ``bias`` params, in flax's order.

    The order matters: linen derives each parameter's init key from the order of creation,
    so creating ``scale`` first reproduces flax's parameters for random initializers too.
    """
    scale = module.param("scale", scale_init, shape, param_dtype) if use_scale else None
    bias = module.param("bias", bias_init, shape, param_dtype) if use_bias else None
    return scale, bias


def take_channel_axis(module: nn.Module) -> None:
    """``channel_axis=``, the deprecated field name of a layer's ``feature_axes``: moved there
    with a ``DeprecationWarning`` (both given is a ``TypeError``). Call from ``__post_init__``."""
    old = module.channel_axis
    if old is None:
        return
    deprecated_name(type(module).__name__, "channel_axis", "feature_axes",
                    both=module.feature_axes != -1, stacklevel=4)
    object.__setattr__(module, "feature_axes", old)
    object.__setattr__(module, "channel_axis", None)

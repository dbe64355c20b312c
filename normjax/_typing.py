"""The type aliases every module of normjax uses, declared once."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import jax

__all__ = ["Array", "ArrayLike", "Axes", "AxisName", "PyTree"]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
#: One axis or several (negative axes count from the end).
Axes = int | Sequence[int]
#: A named axis of ``vmap`` / ``shard_map`` / ``pmap`` (or a tuple of them); ``None``: none.
AxisName = Hashable | None
PyTree = Any

"""The :class:`Dataset` value the runner trains on, and how loaders' results become one."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Dataset", "as_dataset", "make_dataset"]


class Dataset(NamedTuple):
    """Train/test arrays; ``input_shape`` is the per-example shape (no batch axis)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    input_shape: tuple[int, ...]


def make_dataset(name: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
          yte: np.ndarray, num_classes: int) -> Dataset:
    """Build a :class:`Dataset` with canonical dtypes, checking labels are in range."""
    for labels in (ytr, yte):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got "
                             f"[{labels.min()}, {labels.max()}]")
    return Dataset(np.asarray(xtr, np.float32), np.asarray(ytr, np.int32),
                   np.asarray(xte, np.float32), np.asarray(yte, np.int32),
                   num_classes, name, tuple(int(d) for d in xtr.shape[1:]))


def as_dataset(name: str, result: Any) -> Dataset:
    """A loader's result (a :class:`Dataset` or a mapping of arrays) as a :class:`Dataset`."""
    if isinstance(result, Dataset):
        return result
    keys = ("x_train", "y_train", "x_test", "y_test")
    if not isinstance(result, dict) or not set(keys) <= set(result):
        raise ValueError(f"dataset {name!r}: the loader must return a Dataset or a dict with "
                         f"{list(keys)} (and optionally num_classes), got "
                         f"{type(result).__name__}")
    xtr, ytr, xte, yte = (np.asarray(result[k]) for k in keys)
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"dataset {name!r}: {split} inputs {x.shape} and labels "
                             f"{y.shape} {y.dtype} must be (N, ...) and integer (N,)")
    num_classes = int(result.get("num_classes", max(ytr.max(initial=0), yte.max(initial=0)) + 1))
    return make_dataset(name, xtr, ytr, xte, yte, num_classes)

"""The :class:`Dataset` value the runner trains on, and how loaders' results become one."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Dataset", "as_dataset", "hold_out_validation", "make_dataset"]


class Dataset(NamedTuple):
    """Train/test arrays; ``input_shape`` is the per-example shape (no batch axis).

    ``x_val``/``y_val`` is an optional validation split held out of the training data
    (:func:`hold_out_validation`); ``None`` when there is none.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    input_shape: tuple[int, ...]
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


def hold_out_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Move a stratified ``fraction`` of the training split to ``x_val``/``y_val``.

    Per class, ``round(fraction * count)`` examples chosen by ``seed`` are held out (at least
    one where ``fraction > 0``), so every class keeps its share; order is otherwise kept.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction!r}")
    if fraction == 0.0:
        return ds
    rng = np.random.default_rng(seed)
    held = np.zeros(len(ds.y_train), bool)
    for label in np.unique(ds.y_train):
        where = np.flatnonzero(ds.y_train == label)
        k = max(1, round(fraction * len(where)))
        held[rng.choice(where, size=min(k, len(where) - 1), replace=False)] = True
    return ds._replace(x_train=ds.x_train[~held], y_train=ds.y_train[~held],
                       x_val=ds.x_train[held], y_val=ds.y_train[held])


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

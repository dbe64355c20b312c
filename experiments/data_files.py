"""Datasets read from local files: MNIST / Fashion-MNIST IDX files and CIFAR-10 python batches.

The runner downloads nothing: each loader needs ``path`` (the folder holding the files) and
names the file it misses, or the one it cannot read, with where to get it.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from experiments.dataset import Dataset, make_dataset

__all__ = ["load_cifar10", "load_mnist_like", "read_idx"]

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_MNIST_URLS = {"mnist": "https://yann.lecun.com/exdb/mnist/ (or a mirror)",
               "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist"}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _require_dir(path: str | Path | None, name: str, hint: str) -> Path:
    """Return ``path`` as a directory, or raise a helpful error."""
    if path is None:
        raise ValueError(f"dataset {name!r} needs path=<directory with the files>; "
                         f"download it yourself from {hint}")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"dataset {name!r}: directory {str(path)!r} does not exist; "
                                f"download the files from {hint}")
    return Path(path)


def read_idx(file: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed, detected by magic bytes)."""
    raw = Path(file).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{file}: bad IDX magic number {raw[:4].hex() or '(empty)'}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{file}: truncated IDX header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{file}: IDX file has {len(raw)} bytes, expected {expected} "
                         f"for shape {dims} (truncated or corrupt)")
    data = np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(root: Path, base: str, name: str) -> Path:
    """Locate ``base`` or ``base.gz`` under ``root``."""
    for candidate in (root / base, root / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"dataset {name!r}: expected {base!r} (or {base}.gz) in {root}; "
                            f"download it yourself from {_MNIST_URLS[name]}")


def load_mnist_like(name: str, path: str | Path | None = None) -> Dataset:
    """MNIST / Fashion-MNIST from local IDX files, (28, 28, 1), pixels scaled to [0, 1]."""
    root = _require_dir(path, name, _MNIST_URLS[name])
    xtr, ytr, xte, yte = (read_idx(_find_idx(root, base, name)) for base in _MNIST_FILES)
    for images, labels, split in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{name} {split}: images {images.shape} / labels {labels.shape} "
                             "must be (N, H, W) / (N,)")
    return make_dataset(name, xtr[..., None] / 255.0, ytr, xte[..., None] / 255.0, yte, 10)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch as NHWC uint8 images and labels (trusted file: pickle)."""
    try:
        with open(file, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{file}: not a readable CIFAR-10 python batch ({type(e).__name__}: "
                         f"{e}); the file is truncated or corrupt: extract it again from "
                         f"{_CIFAR_URL}") from e
    if not isinstance(batch, dict) or not {b"data", b"labels"} <= batch.keys():
        raise ValueError(f"{file}: not a CIFAR-10 batch (dict with b'data', b'labels')")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], np.int64)
    bad_data = data.dtype != np.uint8 or data.ndim != 2 or data.shape[-1] != 3072
    if bad_data or len(labels) != len(data):
        raise ValueError(f"{file}: expected uint8 data (N, 3072) and N labels, got "
                         f"{data.dtype} {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(path: str | Path | None = None) -> Dataset:
    """CIFAR-10 python batches (in ``path`` or ``path/cifar-10-batches-py``), (32, 32, 3)."""
    root = _require_dir(path, "cifar10", _CIFAR_URL)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for fname in names:
        if not (root / fname).is_file():
            raise FileNotFoundError(f"dataset 'cifar10': expected {fname!r} in {root}; "
                                    f"download and extract {_CIFAR_URL} yourself")
    batches_ = [_read_cifar_batch(root / fname) for fname in names]
    xtr = np.concatenate([b[0] for b in batches_[:-1]])
    ytr = np.concatenate([b[1] for b in batches_[:-1]])
    return make_dataset("cifar10", xtr / 255.0, ytr, batches_[-1][0] / 255.0, batches_[-1][1], 10)

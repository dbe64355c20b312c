"""Tests for experiments/data.py (numpy-side, no network)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from experiments import data
from experiments.data import (
    KNOWN_DATASETS,
    Dataset,
    batches,
    load_dataset,
    num_batches_per_epoch,
    standardize,
)
from experiments.data_files import read_idx

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _check_dataset(ds: Dataset, name: str, input_shape: tuple[int, ...],
                   num_classes: int) -> None:
    assert ds.name == name
    assert ds.input_shape == input_shape
    assert ds.num_classes == num_classes
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape == (len(y), *input_shape)
        assert y.min() >= 0 and y.max() < num_classes


# ---------------------------------------------------------------- digits


def test_digits_shapes_and_stratified_split() -> None:
    ds = load_dataset("digits")
    _check_dataset(ds, "digits", (8, 8, 1), 10)
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert len(ds.y_test) == pytest.approx(0.25 * 1797, abs=1)
    frac = np.bincount(ds.y_test, minlength=10) / np.bincount(ds.y_train, minlength=10)
    np.testing.assert_allclose(frac, 1 / 3, atol=0.03)


def test_digits_seeded_split_and_flatten() -> None:
    a, b = load_dataset("digits", seed=1), load_dataset("digits", seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = load_dataset("digits", seed=2)
    assert not np.array_equal(a.x_train, c.x_train)
    flat = load_dataset("digits", seed=1, flatten=True, test_fraction=0.5)
    assert flat.input_shape == (64,) and flat.x_train.shape[1] == 64
    assert len(flat.y_test) == pytest.approx(1797 / 2, abs=1)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_digits_bad_test_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("digits", test_fraction=fraction)


def test_digits_standardization_is_global_train_only() -> None:
    raw = load_dataset("digits", standardize_inputs=False)
    ds = load_dataset("digits")
    assert abs(ds.x_train.mean()) < 1e-5 and abs(ds.x_train.std() - 1) < 1e-4
    assert ds.x_test.mean() != 0.0 and abs(ds.x_test.mean()) < 0.1
    expected = (raw.x_test - raw.x_train.mean()) / raw.x_train.std()
    np.testing.assert_allclose(ds.x_test, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(ds.x_test).max() < 5  # no per-pixel blow-up


def test_synthetic_standardization_is_per_feature_train_only() -> None:
    raw = load_dataset("synthetic", seed=2, num_train=200, num_test=100, dim=6,
                       standardize_inputs=False)
    ds = load_dataset("synthetic", seed=2, num_train=200, num_test=100, dim=6)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0, atol=1e-4)
    assert np.abs(ds.x_test.mean(axis=0)).min() > 0.0
    mean, sd = raw.x_train.mean(axis=0), raw.x_train.std(axis=0)
    np.testing.assert_allclose(ds.x_test, (raw.x_test - mean) / sd, rtol=1e-4, atol=1e-5)


def test_standardize_constant_feature_is_only_centred() -> None:
    x = np.ones((10, 3), np.float32)
    x[:, 0] = np.arange(10)
    tr, te = standardize(x, x + 1, "feature")
    np.testing.assert_array_equal(tr[:, 1:], 0.0)
    np.testing.assert_array_equal(te[:, 1:], 1.0)
    assert np.isfinite(tr).all() and np.isfinite(te).all()


def test_standardize_modes() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 4, 4, 3)) * [1, 2, 3] + [1, 2, 3]).astype(np.float32)
    tr, te = standardize(x, x[:5] + 1, "channel")
    np.testing.assert_allclose(tr.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(tr.std(axis=(0, 1, 2)), 1, atol=1e-4)
    assert te.dtype == np.float32
    tr, _ = standardize(x, x, "global")
    assert abs(tr.mean()) < 1e-5 and abs(tr.std() - 1) < 1e-4
    with pytest.raises(ValueError, match="mode"):
        standardize(x, x, "pixel")


# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_determinism() -> None:
    kw = dict(num_train=60, num_test=30, dim=5, num_classes=3, noise=0.5)
    a = load_dataset("synthetic", seed=3, **kw)
    _check_dataset(a, "synthetic", (5,), 3)
    assert (len(a.y_train), len(a.y_test)) == (60, 30)
    b = load_dataset("synthetic", seed=3, **kw)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    c = load_dataset("synthetic", seed=4, **kw)
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.y_test, c.y_test)


@pytest.mark.parametrize("arg,value", [("num_train", 0), ("num_test", -1), ("dim", 0),
                                       ("num_classes", 1), ("noise", -0.1)])
def test_synthetic_bad_args(arg: str, value: float) -> None:
    with pytest.raises(ValueError, match=arg):
        load_dataset("synthetic", **{arg: value})


# ---------------------------------------------------------------- mnist1d


def test_mnist1d_generation_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = np.random.get_state()
    ds = load_dataset("mnist1d", seed=5, num_samples=100, cache_dir=tmp_path)
    assert np.array_equal(np.random.get_state()[1], state[1])  # global RNG untouched
    _check_dataset(ds, "mnist1d", (40, 1), 10)
    assert (len(ds.y_train), len(ds.y_test)) == (80, 20)
    assert data.mnist1d_cache_file(5, 100, tmp_path).is_file()

    def fail(*args: object) -> None:
        raise AssertionError("cache miss: mnist1d was regenerated")

    monkeypatch.setattr(data, "_generate_mnist1d", fail)
    again = load_dataset("mnist1d", seed=5, num_samples=100, cache_dir=tmp_path)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_array_equal(ds.y_test, again.y_test)
    with pytest.raises(AssertionError, match="cache miss"):  # other key, other file
        load_dataset("mnist1d", seed=6, num_samples=100, cache_dir=tmp_path)


def test_mnist1d_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NORMJAX_CACHE", str(tmp_path / "env"))
    assert data.default_cache_dir() == tmp_path / "env"
    ds = load_dataset("mnist1d", seed=1, num_samples=50, flatten=True)
    assert ds.input_shape == (40,)
    assert (tmp_path / "env" / data.mnist1d_cache_file(1, 50).name).is_file()


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path: Path) -> None:
    file = data.mnist1d_cache_file(0, 30, tmp_path)
    file.write_bytes(b"not an npz")
    ds = load_dataset("mnist1d", num_samples=30, cache_dir=tmp_path)
    assert len(ds.y_train) == 24
    with np.load(file) as npz:
        assert npz["x_train"].shape == (24, 40)


def test_mnist1d_bad_num_samples(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_samples"):
        load_dataset("mnist1d", num_samples=5, cache_dir=tmp_path)


# ---------------------------------------------------------------- IDX / MNIST


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, code, array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_mnist(root: Path, n_train: int = 5, n_test: int = 3, gz: bool = False) -> dict:
    rng = np.random.default_rng(0)
    arrays = {MNIST_FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              MNIST_FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
              MNIST_FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              MNIST_FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8)}
    root.mkdir(parents=True, exist_ok=True)
    for fname, arr in arrays.items():
        raw = _idx_bytes(arr)
        (root / (fname + ".gz" if gz else fname)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loader(tmp_path: Path, name: str, gz: bool) -> None:
    arrays = _write_mnist(tmp_path, gz=gz)
    ds = load_dataset(name, path=tmp_path, standardize_inputs=False)
    _check_dataset(ds, name, (28, 28, 1), 10)
    np.testing.assert_allclose(ds.x_train[..., 0], arrays[MNIST_FILES[0]] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays[MNIST_FILES[3]])
    std = load_dataset(name.replace("_", "-"), path=str(tmp_path))
    assert abs(std.x_train.mean()) < 1e-5 and abs(std.x_train.std() - 1) < 1e-4


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32),
                                        (0x0E, np.float64)])
def test_read_idx_dtypes(tmp_path: Path, code: int, dtype: type) -> None:
    arr = np.arange(24).reshape(2, 3, 4).astype(dtype)
    (tmp_path / "a").write_bytes(_idx_bytes(arr, code))
    out = read_idx(tmp_path / "a")
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("raw,match", [
    (b"\x08\x03\x00\x00" + b"\x00" * 20, "bad IDX magic"),
    (b"\x00\x00\x42\x01\x00\x00\x00\x01\x00", "bad IDX magic"),
    (b"", "bad IDX magic"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated or corrupt"),
])
def test_read_idx_errors(tmp_path: Path, raw: bytes, match: str) -> None:
    (tmp_path / "bad").write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        read_idx(tmp_path / "bad")


def test_mnist_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs path="):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("fashion_mnist", path=tmp_path / "nope")
    _write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[3]).unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*fashion-mnist"):
        load_dataset("fashion_mnist", path=tmp_path)


def test_mnist_label_count_mismatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[1]).write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="mnist train"):
        load_dataset("mnist", path=tmp_path)


def test_mnist_label_out_of_range(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[3]).write_bytes(_idx_bytes(np.array([0, 10, 1], np.uint8)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        load_dataset("mnist", path=tmp_path)


# ---------------------------------------------------------------- CIFAR-10


def _write_cifar(root: Path, per_batch: int = 2, n_test: int = 4) -> dict:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    batches_ = {}
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if fname == "test_batch" else per_batch
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        (root / fname).write_bytes(pickle.dumps(batch))
        batches_[fname] = batch
    return batches_


@pytest.mark.parametrize("subdir", [False, True])
def test_cifar10_loader(tmp_path: Path, subdir: bool) -> None:
    written = _write_cifar(tmp_path / "cifar-10-batches-py" if subdir else tmp_path)
    ds = load_dataset("cifar10", path=tmp_path, standardize_inputs=False)
    _check_dataset(ds, "cifar10", (32, 32, 3), 10)
    assert (len(ds.y_train), len(ds.y_test)) == (10, 4)
    first = written["data_batch_1"][b"data"][0]
    # NHWC pixel (h, w, c) comes from the channel-first row at c*1024 + h*32 + w
    assert ds.x_train[0, 2, 5, 1] == pytest.approx(first[1024 + 2 * 32 + 5] / 255.0)
    assert ds.x_train[0, 31, 0, 2] == pytest.approx(first[2048 + 31 * 32] / 255.0)
    np.testing.assert_array_equal(ds.y_train[2:4], written["data_batch_2"][b"labels"])
    std = load_dataset("cifar10", path=tmp_path, flatten=True)
    assert std.input_shape == (3072,)
    channels = std.x_train.reshape(-1, 32, 32, 3)
    np.testing.assert_allclose(channels.mean(axis=(0, 1, 2)), 0, atol=1e-5)


def test_cifar10_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs path="):
        load_dataset("cifar10")
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3.*cifar-10-python"):
        load_dataset("cifar10", path=tmp_path)
    (tmp_path / "data_batch_3").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match="3072"):
        load_dataset("cifar10", path=tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="not a CIFAR-10 batch"):
        load_dataset("cifar10", path=tmp_path)
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    (tmp_path / "data_batch_3").write_bytes(good[: len(good) // 2])  # a truncated download
    with pytest.raises(ValueError, match=r"data_batch_3: not a readable CIFAR-10 python batch "
                                         r"\(UnpicklingError.*truncated or corrupt: extract"):
        load_dataset("cifar10", path=tmp_path)


# ---------------------------------------------------------------- dispatch


def test_unknown_dataset_and_options() -> None:
    with pytest.raises(ValueError, match=r"known: .*digits.*cifar10"):
        load_dataset("imagenet")
    assert set(KNOWN_DATASETS) == {"digits", "mnist1d", "mnist_5k", "synthetic", "mnist",
                                   "fashion_mnist", "cifar10"}
    with pytest.raises(TypeError, match="test_fraction"):
        load_dataset("digits", num_samples=3)
    with pytest.raises(TypeError, match="unexpected option"):
        load_dataset("mnist", path="/nonexistent", seed_offset=1)
    with pytest.raises(ValueError, match="does not take a path"):
        load_dataset("synthetic", path="/tmp")


# ---------------------------------------------------------------- batching


def test_batches_deterministic_epoch() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.int32)
    a = list(batches(x, y, 3, key_or_seed=(0, 1)))
    b = list(batches(x, y, 3, key_or_seed=(0, 1)))
    assert len(a) == num_batches_per_epoch(10, 3) == 3
    for (xa, ya), (xb, _) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(xa[:, 0], 2 * ya)  # pairs stay aligned
    seen = np.concatenate([yb for _, yb in a])
    assert len(np.unique(seen)) == 9
    other = np.concatenate([yb for _, yb in batches(x, y, 3, key_or_seed=(0, 2))])
    assert not np.array_equal(seen, other)


def test_batches_remainder_noshuffle_and_keys() -> None:
    x, y = np.zeros((10, 1), np.float32), np.arange(10)
    full = list(batches(x, y, 4, key_or_seed=0, drop_remainder=False, shuffle=False))
    assert [len(b[1]) for b in full] == [4, 4, 2]
    assert num_batches_per_epoch(10, 4, drop_remainder=False) == 3
    np.testing.assert_array_equal(np.concatenate([b[1] for b in full]), y)
    rng_order = next(batches(x, y, 10, key_or_seed=np.random.default_rng(7)))[1]
    np.testing.assert_array_equal(rng_order, np.random.default_rng(7).permutation(10))
    jax = pytest.importorskip("jax")
    legacy, typed = jax.random.PRNGKey(42), jax.random.key(42)
    np.testing.assert_array_equal(next(batches(x, y, 5, key_or_seed=legacy))[1],
                                  next(batches(x, y, 5, key_or_seed=typed))[1])


def test_batches_errors() -> None:
    x, y = np.zeros((10, 1)), np.zeros(10)
    with pytest.raises(ValueError, match="batch_size"):
        batches(x, y, 0, key_or_seed=0)
    with pytest.raises(ValueError, match=r"batch_size .*larger"):
        batches(x, y, 11, key_or_seed=0)
    with pytest.raises(ValueError, match="lengths differ"):
        batches(x, y[:5], 2, key_or_seed=0)
    with pytest.raises(ValueError, match="key_or_seed"):
        batches(x, y, 2, key_or_seed=-1)
    with pytest.raises(ValueError, match="key_or_seed"):
        batches(x, y, 2, key_or_seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_examples"):
        num_batches_per_epoch(0, 1)

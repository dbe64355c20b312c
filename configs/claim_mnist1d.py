"""Claim: the MNIST-1D baselines of Greydanus (2020) reproduce.

    python -m experiments.studies --only mnist1d
    python -m experiments --config configs/claim_mnist1d.py:cnn --workdir runs/claim_mnist1d

The paper's setup from ``configs/mnist1d.py`` (4000/1000 examples, Adam lr 1e-2, batch 100,
6000 steps): logistic regression, the MLP (2x100 ReLU) and the CNN (3 stride-2 convolutions,
25 channels), without normalization (the paper's models), 6 seeds.  The norms are compared on
MNIST-1D in ``claim_group_norm.py`` and ``claim_layer_norm_sequences.py``.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from experiments.config import load_config, technique

REFERENCE = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    model = arg or "cnn"
    if model not in REFERENCE:
        raise ValueError(f"configs/claim_mnist1d.py: argument must be one of "
                         f"{sorted(REFERENCE)}, got {arg!r}")
    config = load_config(f"{Path(__file__).with_name('mnist1d.py')}:{model}")
    config.unlock()
    config.name = f"claim: MNIST-1D {model}"
    config.num_seeds = 6
    config.log_every = 500
    config.techniques = ml_collections.ConfigDict(sort_keys=False)
    config.techniques.none = technique()
    return config

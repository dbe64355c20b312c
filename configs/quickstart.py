"""Quickstart: normalization and regularization on scikit-learn's 8x8 digits, MLP, 3 seeds.

    python -m experiments --config configs/quickstart.py --workdir runs/quickstart

Compares no normalization, BatchNorm, LayerNorm, GroupNorm, dropout and L2 on a 3-hidden-layer
MLP trained with SGD + momentum; takes about a minute on two CPU cores.  Any field can be
overridden, e.g. ``--config.steps=300 --config.num_seeds=5``.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "quickstart: digits MLP"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=3, width=64, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.02, momentum=0.9,
                            schedule="cosine")
    config.steps = 1000
    config.batch_size = 64
    config.log_every = 100
    config.num_seeds = 3
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    config.techniques.layer = technique("layer")
    config.techniques.group = technique("group", num_groups=8)
    config.techniques.dropout = technique(dropout=0.2)
    config.techniques.l2 = technique(l2=1e-3)
    return config

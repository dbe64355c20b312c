"""Claim: BatchNorm speeds up convergence (Ioffe & Szegedy 2015, Sec. 4.1, Figure 1a).

    python -m experiments.studies --only bn_convergence
    python -m experiments --config configs/claim_bn_convergence.py --workdir runs/bn_convergence

The BN paper's MNIST network (3 hidden layers of 100 sigmoid units) on scikit-learn's digits,
SGD with momentum 0.9, batch 64, 500 steps, 8 seeds, with and without BatchNorm over a
learning-rate grid.  Measured: steps until the training loss (whole training set, eval mode)
first reaches ``TARGET``, at each model's own best learning rate (fewest median steps) and at
the shared rate ``SHARED_LR``.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
SHARED_LR = 0.1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: BN speeds up convergence"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=3, width=100, activation="sigmoid")
    config.optimizer.update(name="momentum", learning_rate=SHARED_LR, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 500, 10, 64
    config.eval_train_examples = 0  # the whole training set
    config.num_seeds = 8
    config.sweep.learning_rate = LEARNING_RATES
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

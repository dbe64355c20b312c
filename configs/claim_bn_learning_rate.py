"""Claim: BatchNorm tolerates larger learning rates (Ioffe & Szegedy 2015, Sec. 3.3).

    python -m experiments.studies --only bn_learning_rate
    python -m experiments --config configs/claim_bn_learning_rate.py --workdir runs/bn_lr

A 6-hidden-layer ReLU MLP (width 64) on digits, SGD with momentum 0.9, batch 64, 400 steps,
8 seeds, with and without BatchNorm, over a learning-rate grid from 0.003 to 30.  Measured:
final test accuracy per rate, and per seed the largest rate that still trains (final test
accuracy >= ``TRAINS``; a diverged run does not train).
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

LEARNING_RATES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: BN tolerates larger learning rates"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=6, width=64, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.1, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 400, 100, 64
    config.num_seeds = 8
    config.sweep.learning_rate = LEARNING_RATES
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

"""Claim: BatchNorm's eval mode can disagree with its train mode; Precise BN fixes the EMA part.

    python -m experiments.studies --only bn_train_eval
    python -m experiments --config configs/claim_bn_train_eval.py --workdir runs/bn_train_eval

Digits, MLP 3x64 ReLU with BatchNorm, SGD momentum 0.9, lr 0.1, batch 32, 600 steps, 8 seeds,
EMA decay (flax ``momentum``, the weight on the old value) 0.9, 0.99 and 0.999.  Every
``log_every`` steps the test accuracy is measured three ways: eval mode with the EMA
(``test/accuracy``), train mode with each test batch's own statistics
(``test_batch_stats/accuracy``), and eval mode with Precise BN statistics recomputed exactly
over 20 training batches (:func:`experiments.probes.precise_bn_probe`).
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

DECAYS = (0.9, 0.99, 0.999)


def decay_label(decay: float) -> str:
    return f"bn_{decay:g}".replace("0.", "")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: BN train/eval discrepancy"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=3, width=64, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.1, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 600, 20, 32
    config.num_seeds = 8
    for decay in DECAYS:
        config.techniques[decay_label(decay)] = technique("batch", momentum=decay)
    return config

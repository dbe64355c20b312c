"""Claim: BatchNorm makes the loss landscape smoother (Santurkar et al. 2018, Sec. 3.1, Fig. 4).

    python -m experiments.studies --only landscape
    python -m experiments --config configs/claim_landscape.py --workdir runs/landscape

A 6-hidden-layer ReLU MLP (width 64) on digits, plain SGD, lr 0.1, batch 64, 600 steps,
8 seeds, with and without BatchNorm.  Every 30 steps, on one fixed training batch (BN in
train mode), the loss and the gradient are measured along the gradient direction,
``theta - eta g`` for ``eta`` = 0.5, 1, 2 and 4 times the learning rate (0.05 to 0.4, the
range of the paper): loss range (max - min over eta), gradient change (max over eta of
``||grad L(theta - eta g) - g||``, "gradient predictiveness") and effective beta-smoothness
(max of the gradient change over ``eta ||g||``); per seed, the median over training.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: loss-landscape smoothness"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=6, width=64, activation="relu")
    config.optimizer.update(name="sgd", learning_rate=0.1)
    config.steps, config.log_every, config.batch_size = 600, 30, 64
    config.num_seeds = 8
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

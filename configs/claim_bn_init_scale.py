"""Claim: BatchNorm makes training less sensitive to the weight-initialization scale.

    python -m experiments.studies --only bn_init_scale
    python -m experiments --config configs/claim_bn_init_scale.py --workdir runs/bn_init

A 6-hidden-layer ReLU MLP (width 64) on digits, every kernel multiplied by an init scale from
0.1 to 10 (LeCun-normal otherwise), SGD with momentum 0.9, learning rate 0.03, batch 64,
400 steps, 8 seeds, with and without BatchNorm.  Measured per seed: the range (max - min) of
the final test accuracy over the scales, and the worst accuracy over the scales.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

SCALES = (0.1, 0.3, 1.0, 3.0, 10.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: BN and the initialization scale"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=6, width=64, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.03, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 400, 50, 64
    config.num_seeds = 8
    config.sweep.init_scale = SCALES
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

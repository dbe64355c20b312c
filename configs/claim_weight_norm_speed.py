"""Claim: WeightNorm speeds up training like BatchNorm, at a lower cost per step.

    python -m experiments.studies --only weight_norm_speed
    python -m experiments --config configs/claim_weight_norm_speed.py --workdir runs/wn_speed

Real MNIST digits (``mnist_5k``, 3,200 train / 800 validation / 1,000 test, 784 pixels), MLP
3x128 ReLU; no norm, WeightNorm (``w = g v / ||v||`` per output unit, data-independent init)
and BatchNorm; SGD momentum 0.9, batch 32, 600 steps logged every 60 (10 timed chunks), every
learning rate of ``LEARNING_RATES``, 8 seeds.  All runs of a technique train together in one
compiled program, so their time per step is one measurement per chunk.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

LEARNING_RATES = (0.01, 0.03, 0.1, 0.3)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "main"):
        raise ValueError(f"configs/claim_weight_norm_speed.py: argument must be 'main' or "
                         f"none, got {arg!r}")
    config = base_config()
    config.name = "claim: WeightNorm vs BatchNorm, steps and seconds"
    config.dataset.name = "mnist_5k"
    config.dataset.validation_fraction = 0.2
    config.model.update(kind="mlp", depth=3, width=128, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.1, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 600, 60, 32
    config.eval_train_examples = 1000
    config.num_seeds = 8
    config.sweep.learning_rate = LEARNING_RATES
    config.techniques.none = technique()
    config.techniques.weight = technique("weight")
    config.techniques.batch = technique("batch")
    return config

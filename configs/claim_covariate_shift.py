"""Claim: BatchNorm reduces internal covariate shift (Ioffe & Szegedy 2015, Figure 1b-c).

    python -m experiments.studies --only covariate_shift
    python -m experiments --config configs/claim_covariate_shift.py --workdir runs/ics

The BN paper's MNIST network (3 hidden layers of 100 sigmoid units) on digits, SGD momentum
0.9, lr 0.1, batch 64, 1000 steps, 8 seeds, with and without BatchNorm.  Every 25 steps the
15th, 50th and 85th percentiles of each hidden layer's output (the next layer's input) and of
its sigmoid's input (after BN, if any) are measured per unit on a fixed batch of 512 training
examples (:func:`experiments.probes.input_quantile_probe`, first 16 units).  Shift = how far
the three percentiles travel over training (:func:`experiments.studies.metrics.path_length`),
mean over units.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: internal covariate shift"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=3, width=100, activation="sigmoid")
    config.optimizer.update(name="momentum", learning_rate=0.1, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 1000, 25, 64
    config.num_seeds = 8
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

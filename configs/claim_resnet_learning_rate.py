"""Claim on real images: BatchNorm trains faster and at larger learning rates (ResNet, MNIST).

    python -m experiments.studies --only resnet_learning_rate
    python -m experiments --config configs/claim_resnet_learning_rate.py --workdir runs/rn_lr

The setup of ``configs/resnet_mnist.py``, without normalization and with BatchNorm, each
trained at every rate of ``LEARNING_RATES`` for 400 steps (4 epochs); each one's rate is chosen
on the validation split and its test error reported at that rate.
"""

from __future__ import annotations

import ml_collections

from configs import resnet_mnist
from experiments.config import technique

LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "main"):
        raise ValueError(f"configs/claim_resnet_learning_rate.py: argument must be 'main' or "
                         f"none, got {arg!r}")
    config = resnet_mnist.get_config("learning rates")
    config.techniques = ml_collections.ConfigDict(sort_keys=False)
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    config.sweep.learning_rate = LEARNING_RATES
    return config

"""Claim: BatchNorm regularizes (its batch statistics are noise) and makes dropout less needed.

    python -m experiments.studies --only bn_regularizer
    python -m experiments --config configs/claim_bn_regularizer.py:b16 --workdir runs/bn_reg

Real MNIST digits (``mnist_5k``, 3,200 train / 800 validation / 1,000 test), MLP 2x128 ReLU,
Adam lr 1e-3, ``EPOCHS`` epochs at batch sizes ``BATCH_SIZES`` (part ``b<batch>``), 8 seeds;
techniques no norm and BatchNorm, each a vmapped sweep of the dropout rate over ``DROPOUT``.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

BATCH_SIZES = (16, 128)
DROPOUT = (0.0, 0.5)
EPOCHS = 15
NUM_TRAIN = 3200


def parse_part(arg: str | None) -> int:
    part = arg or "b16"
    if not part.startswith("b") or not part[1:].isdigit() or int(part[1:]) < 2:
        raise ValueError(f"configs/claim_bn_regularizer.py: argument must be b<batch size>, "
                         f"e.g. b16; got {arg!r}")
    return int(part[1:])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    batch = parse_part(arg)
    config = base_config()
    config.name = f"claim: BN as a regularizer (batch {batch})"
    config.dataset.name = "mnist_5k"
    config.dataset.validation_fraction = 0.2
    config.model.update(kind="mlp", depth=2, width=128, activation="relu")
    config.optimizer.update(name="adam", learning_rate=1e-3)
    steps = EPOCHS * NUM_TRAIN // batch
    config.batch_size, config.steps, config.log_every = batch, steps, steps // 5
    config.eval_train_examples = 0  # the whole training split: the gap needs it
    config.num_seeds = 8
    config.sweep.dropout = DROPOUT
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

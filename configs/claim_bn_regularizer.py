"""Claim: BatchNorm regularizes (its batch statistics are noise) and makes dropout less needed.

    python -m experiments.studies --only bn_regularizer
    python -m experiments --config configs/claim_bn_regularizer.py:b25 --workdir runs/bn_reg

The overfitting setup of ``claim_dropout_gap.py``, where dropout helps: MNIST-1D, 2,000
examples (1,200 train / 400 validation / 400 test), MLP 2x256 ReLU, Adam lr 1e-3; at batch
sizes ``BATCH_SIZES`` (part ``b<batch>``) for the same number of epochs (1,000 steps at batch
100), 8 seeds; no norm and BatchNorm, each a vmapped sweep of the dropout rate over
``DROPOUT``.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

BATCH_SIZES = (25, 100)
DROPOUT = (0.0, 0.4)
STEPS_AT_100 = 1000


def parse_part(arg: str | None) -> int:
    part = arg or "b100"
    if not part.startswith("b") or not part[1:].isdigit() or int(part[1:]) < 2:
        raise ValueError(f"configs/claim_bn_regularizer.py: argument must be b<batch size>, "
                         f"e.g. b25; got {arg!r}")
    return int(part[1:])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    batch = parse_part(arg)
    config = base_config()
    config.name = f"claim: BN as a regularizer (batch {batch})"
    config.dataset.name = "mnist1d"
    config.dataset.seed = 42
    config.dataset.options = {"num_samples": 2000}
    config.dataset.validation_fraction = 0.25
    config.model.update(kind="mlp", depth=2, width=256, activation="relu")
    config.optimizer.update(name="adam", learning_rate=1e-3)
    steps = STEPS_AT_100 * 100 // batch
    config.batch_size, config.steps, config.log_every = batch, steps, steps // 4
    config.eval_train_examples = 0  # the whole training split: the gap needs it
    config.num_seeds = 8
    config.sweep.dropout = DROPOUT
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

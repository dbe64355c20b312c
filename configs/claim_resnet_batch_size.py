"""Claim on real images: BatchNorm degrades at tiny batches, GroupNorm and LayerNorm do not.

    python -m experiments.studies --only resnet_batch_size
    python -m experiments --config configs/claim_resnet_batch_size.py:b2 --workdir runs/rn_b2

The setup of ``configs/resnet_mnist.py`` at batch sizes ``BATCH_SIZES`` (part ``b<batch>``),
equal epochs (``EPOCHS``), with the linear scaling rule ``lr = 0.1 x batch / 32``.  Unlike the
8x8-digits CNN of ``claim_bn_batch_size`` (whose last BatchNorm sees one pixel per example), the
last BatchNorm here normalizes 7x7 positions per example: 98 values per channel at batch 2.
"""

from __future__ import annotations

import ml_collections

from configs import resnet_mnist

BATCH_SIZES = (2, 32)
EPOCHS = 2


def parse_part(arg: str | None) -> int:
    part = arg or "b32"
    if not part.startswith("b") or not part[1:].isdigit() or int(part[1:]) < 1:
        raise ValueError(f"configs/claim_resnet_batch_size.py: argument must be b<batch size>, "
                         f"e.g. b2; got {arg!r}")
    return int(part[1:])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    batch = parse_part(arg)
    config = resnet_mnist.get_config(f"batch {batch}")
    steps = EPOCHS * resnet_mnist.NUM_TRAIN // batch
    config.batch_size, config.steps, config.log_every = batch, steps, steps // 4
    config.optimizer.learning_rate = 0.1 * batch / 32
    return config

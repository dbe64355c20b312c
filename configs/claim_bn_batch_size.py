"""Claim: BatchNorm degrades at tiny batch sizes; GroupNorm and LayerNorm do not (Wu & He 2018).

    python -m experiments.studies --only bn_batch_size
    python -m experiments --config configs/claim_bn_batch_size.py:mlp_b2 --workdir runs/bs_mlp2

Digits, one run per model and batch size (part ``<mlp|cnn>_b<batch size>``), each training
``EPOCHS`` epochs (equal epochs: steps = epochs x N / batch size) with SGD + momentum 0.9 and
the linear scaling rule lr = 0.1 x batch / 32, 8 seeds; techniques BatchNorm (eval mode with
its running averages), GroupNorm (8 groups) and LayerNorm.  The MLP has 3 hidden layers of
64; the CNN three 3x3 stride-2 convolutions with 32 channels (8x8 -> 1x1).
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique
from experiments.data import load_dataset

BATCH_SIZES = {"mlp": (2, 32), "cnn": (2, 8, 32)}
EPOCHS = 5


def parse_part(arg: str | None) -> tuple[str, int]:
    kind, _, b = (arg or "mlp_b32").partition("_b")
    if kind not in BATCH_SIZES or not b.isdigit() or int(b) < 1:
        raise ValueError(f"configs/claim_bn_batch_size.py: argument must be <mlp|cnn>_b<batch "
                         f"size>, e.g. mlp_b2; got {arg!r}")
    return kind, int(b)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    kind, batch = parse_part(arg)
    config = base_config()
    config.name = f"claim: BN at small batches ({kind}, batch {batch})"
    config.dataset.name = "digits"
    config.model.update(kind=kind, depth=3, width=64 if kind == "mlp" else 32,
                        activation="relu", kernel_size=3, stride=2)
    config.optimizer.update(name="momentum", learning_rate=0.1 * batch / 32, momentum=0.9)
    num_train = len(load_dataset("digits", seed=config.dataset.seed).x_train)
    chunks = 5
    config.steps = max(chunks, round(EPOCHS * num_train / batch / chunks) * chunks)
    config.log_every, config.batch_size = config.steps // chunks, batch
    config.num_seeds = 8
    config.techniques.batch = technique("batch")
    config.techniques.group = technique("group", num_groups=8)
    config.techniques.layer = technique("layer")
    return config

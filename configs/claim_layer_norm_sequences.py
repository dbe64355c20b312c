"""Claim: LayerNorm suits recurrent networks and small batches; BatchNorm does not.

    python -m experiments.studies --only layer_norm_sequences
    python -m experiments --config configs/claim_layer_norm_sequences.py:b8 --workdir runs/ln8

MNIST-1D (4,000 train / 1,000 test, generated with seed 42) read as a sequence of 40 time steps
of one value, classified by ``examples/gru.py`` (dense(32) -> norm -> relu at every step, a GRU
of 32 units -> norm, the last step -> dense head) through the model factory.  No norm,
BatchNorm (pooled over batch and time) and LayerNorm (per time step); Adam lr 3e-3, ``EPOCHS``
epochs at batch ``BATCH_SIZES`` (part ``b<batch>``), 8 seeds.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

BATCH_SIZES = (8, 64)
EPOCHS = 4
NUM_TRAIN = 4000


def parse_part(arg: str | None) -> int:
    part = arg or "b64"
    if not part.startswith("b") or not part[1:].isdigit() or int(part[1:]) < 2:
        raise ValueError(f"configs/claim_layer_norm_sequences.py: argument must be "
                         f"b<batch size>, e.g. b8; got {arg!r}")
    return int(part[1:])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    batch = parse_part(arg)
    config = base_config()
    config.name = f"claim: LayerNorm for sequences (batch {batch})"
    config.dataset.name = "mnist1d"
    config.dataset.seed = 42
    config.model.factory = "examples.gru:gru"
    config.model.options = {"width": 32}
    config.optimizer.update(name="adam", learning_rate=3e-3)
    steps = EPOCHS * NUM_TRAIN // batch // 4 * 4  # four logged chunks
    config.batch_size, config.steps, config.log_every = batch, steps, steps // 4
    config.eval_train_examples = 1000
    config.num_seeds = 8
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    config.techniques.layer = technique("layer")
    return config

"""Claim: dropout narrows the train/test gap; compared with L1 and L2 at several strengths.

    python -m experiments.studies --only dropout_gap
    python -m experiments --config configs/claim_dropout_gap.py:dropout --workdir runs/dropout

MNIST-1D, 2,000 examples: 400 test, and of the 1,600 others a stratified quarter (400) held
out for validation, 1,200 for training (easy to overfit); MLP 2x256 ReLU, Adam lr 1e-3, batch
100, 1000 steps, 8 seeds; one part per regularizer, each a vmapped sweep of its strength over
``STRENGTHS`` (0 = unregularized): ``dropout`` (drop probability after each hidden block),
``l1`` (``+ l1 * sum |w|``) and ``l2`` (``+ l2/2 * sum w^2``), on kernels.  Each
regularizer's strength is chosen on the validation split.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

STRENGTHS = {"dropout": (0.0, 0.2, 0.4, 0.6, 0.8), "l1": (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
             "l2": (0.0, 1e-4, 1e-3, 1e-2, 1e-1)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    kind = arg or "dropout"
    if kind not in STRENGTHS:
        raise ValueError(f"configs/claim_dropout_gap.py: argument must be one of "
                         f"{sorted(STRENGTHS)}, got {arg!r}")
    config = base_config()
    config.name = f"claim: dropout and the generalization gap ({kind})"
    config.dataset.name = "mnist1d"
    config.dataset.seed = 42
    config.dataset.options = {"num_samples": 2000}
    config.dataset.validation_fraction = 0.25  # of the 1,600 training examples
    config.model.update(kind="mlp", depth=2, width=256, activation="relu")
    config.optimizer.update(name="adam", learning_rate=1e-3)
    config.steps, config.log_every, config.batch_size = 1000, 250, 100
    config.eval_train_examples = 0
    config.num_seeds = 8
    config.sweep[kind] = STRENGTHS[kind]
    config.techniques[kind] = technique()
    return config

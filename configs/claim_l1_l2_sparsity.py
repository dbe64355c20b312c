"""Claim: an L1 penalty makes weights sparse, an L2 penalty shrinks them without zeros.

    python -m experiments.studies --only l1_l2_sparsity
    python -m experiments --config configs/claim_l1_l2_sparsity.py:l1 --workdir runs/l1

Real MNIST digits (``mnist_5k``, 3,200 train / 800 validation / 1,000 test, flattened to 784
pixels), MLP 2x128 ReLU, SGD momentum 0.9, lr 0.05, batch 64, 600 steps (12 epochs), 8 seeds;
one part per penalty, each a vmapped sweep of its strength over ``STRENGTHS`` (0 =
unregularized) on the kernels: ``l1`` adds ``l1 * sum |w|``, ``l2`` adds ``l2/2 * sum w^2``.
Plain SGD (not Adam) so that the L1 subgradient can pin weights near zero.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

STRENGTHS = {"l1": (0.0, 1e-5, 1e-4, 1e-3), "l2": (0.0, 1e-4, 1e-3, 1e-2)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    kind = arg or "l1"
    if kind not in STRENGTHS:
        raise ValueError(f"configs/claim_l1_l2_sparsity.py: argument must be one of "
                         f"{sorted(STRENGTHS)}, got {arg!r}")
    config = base_config()
    config.name = f"claim: L1 sparsity vs L2 shrinkage ({kind})"
    config.dataset.name = "mnist_5k"
    config.dataset.validation_fraction = 0.2
    config.model.update(kind="mlp", depth=2, width=128, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.05, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 600, 150, 64
    config.eval_train_examples = 1000
    config.num_seeds = 8
    config.sweep[kind] = STRENGTHS[kind]
    config.techniques[kind] = technique()
    return config

"""Claim: BatchNorm keeps gradients from vanishing or exploding through depth.

    python -m experiments.studies --only gradient_flow
    python -m experiments --config configs/claim_gradient_flow.py:tanh --workdir runs/gflow_tanh

A deep plain MLP (16 hidden layers of 64, LeCun-normal init) on digits, one part per
activation (sigmoid, tanh, ReLU), with and without BatchNorm; SGD momentum 0.9, lr 0.01, batch
64, 300 steps, 8 seeds.  Per-layer gradient norms ``||dL/dW_l||`` on one training batch at
initialization and after training (:func:`experiments.probes.grad_norm_probe`), summarized
by ``log10(first layer / last hidden layer)``: > 0 grows towards the input (explodes
backwards), < 0 shrinks (vanishes).
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    activation = arg or "relu"
    if activation not in ACTIVATIONS:
        raise ValueError(f"configs/claim_gradient_flow.py: argument must be one of "
                         f"{ACTIVATIONS}, got {arg!r}")
    config = base_config()
    config.name = f"claim: gradient flow ({activation})"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=16, width=64, activation=activation)
    config.optimizer.update(name="momentum", learning_rate=0.01, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 300, 50, 64
    config.num_seeds = 8
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config

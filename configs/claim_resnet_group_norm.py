"""Claim on real images: GroupNorm's group count; GroupNorm against BatchNorm at batch 32.

    python -m experiments.studies --only resnet_group_norm
    python -m experiments --config configs/claim_resnet_group_norm.py --workdir runs/rn_groups

The setup of ``configs/resnet_mnist.py`` with GroupNorm at ``GROUPS`` groups (1 group normalizes
like LayerNorm over (H, W, C); 16 groups is InstanceNorm in the 16-channel first stage and 2
channels per group in the second) and BatchNorm, 400 steps at batch 32.
"""

from __future__ import annotations

import ml_collections

from configs import resnet_mnist
from experiments.config import technique

GROUPS = (1, 4, 16)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "main"):
        raise ValueError(f"configs/claim_resnet_group_norm.py: argument must be 'main' or "
                         f"none, got {arg!r}")
    config = resnet_mnist.get_config("group count")
    config.techniques = ml_collections.ConfigDict(sort_keys=False)
    for g in GROUPS:
        config.techniques[f"group_{g}"] = technique("group", num_groups=g)
    config.techniques.batch = technique("batch")
    return config

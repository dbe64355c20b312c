"""A user-style flax ResNet (``nn.Conv``, skip connections) through the model factory.

    python -m experiments --config configs/resnet_digits.py --workdir runs/resnet_digits

Runs ``examples/resnet.py:resnet`` (written as a researcher writes a model: the norm is a
constructor argument) on scikit-learn's 8x8 digits with no normalization, BatchNorm, GroupNorm
and LayerNorm, 3 seeds. Its options are the factory's keyword arguments, e.g.
``--config.model.options.width=32 --config.model.options.blocks="(2, 2)"``. Run it from the
repository root (``examples`` is imported from the current directory).
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "ResNet (examples/resnet.py) on digits"
    config.dataset.name = "digits"
    config.model.factory = "examples.resnet:resnet"
    config.model.options = {"blocks": (1, 1), "width": 16}
    config.optimizer.update(name="adam", learning_rate=3e-3, schedule="cosine")
    config.steps = 600
    config.batch_size = 64
    config.log_every = 100
    config.num_seeds = 3
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    config.techniques.group = technique("group", num_groups=4)
    config.techniques.layer = technique("layer")
    return config

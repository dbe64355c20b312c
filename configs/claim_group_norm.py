"""Claims: GroupNorm between LayerNorm and InstanceNorm; Ghost BN; WeightNorm's data init.

    python -m experiments.studies --only group_norm
    python -m experiments --config configs/claim_group_norm.py:groups --workdir runs/gn_groups

MNIST-1D CNN (3 stride-2 convolutions of 24 channels, kernel 5; 4000 training examples),
Adam lr 1e-2, batch 100, 1000 steps, 6 seeds.  Parts:

* ``groups``: GroupNorm with 1 (= LayerNorm over channels and positions), 4 and 24
  (= InstanceNorm) groups, and BatchNorm;
* ``ghost`` (if the registry has ``ghost_batch``): Ghost BatchNorm with virtual batches of
  4, 10 and 25 examples (Hoffer et al. 2017) within the batch of 100;
* ``weight``: no norm, WeightNorm with the default init, and WeightNorm with the
  data-dependent init of Salimans & Kingma 2016 (:mod:`experiments.data_init`).
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

WIDTH = 24
GROUPS = (1, 4, 24)
VIRTUAL = (4, 10, 25)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    part = arg or "groups"
    if part not in ("groups", "ghost", "weight"):
        raise ValueError(f"configs/claim_group_norm.py: argument must be groups, ghost or "
                         f"weight, got {arg!r}")
    config = base_config()
    config.name = f"claim: group norm and friends ({part})"
    config.dataset.name = "mnist1d"
    config.dataset.seed = 42
    config.dataset.options = {"num_samples": 5000}
    config.model.update(kind="cnn", depth=3, width=WIDTH, kernel_size=5, stride=2,
                        activation="relu")
    config.optimizer.update(name="adam", learning_rate=1e-2)
    config.steps, config.log_every, config.batch_size = 1000, 250, 100
    config.eval_train_examples = 0
    config.num_seeds = 6
    if part == "groups":
        for g in GROUPS:
            config.techniques[f"gn_{g}"] = technique("group", num_groups=g)
        config.techniques.batch = technique("batch")
    elif part == "ghost":
        for v in VIRTUAL:
            config.techniques[f"ghost_{v}"] = technique("ghost_batch", virtual_batch_size=v)
    else:
        config.techniques.none = technique()
        config.techniques.weight = technique("weight")
        config.techniques.weight_ddi = technique("weight")
    return config

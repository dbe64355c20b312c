"""MNIST-1D baselines (Greydanus 2020, "Scaling down deep learning"), with and without norms.

    python -m experiments --config configs/mnist1d.py:cnn --workdir runs/mnist1d_cnn
    python -m experiments --config configs/mnist1d.py:mlp --workdir runs/mnist1d_mlp
    python -m experiments --config configs/mnist1d.py:logistic --workdir runs/mnist1d_logistic
    python -m experiments --config configs/mnist1d.py:cnn,tiny --workdir runs/mnist1d_tiny

The argument is ``<model>[,<size>]``: model ``cnn`` (default), ``mlp`` or ``logistic``; size
``full`` (default: the paper's setup, 4000/1000 examples, Adam lr 1e-2, batch 100, 6000 steps)
or ``tiny`` (800 training examples, 300 steps; for a quick look).  The paper reports test
accuracies of about 32% (logistic), 68% (MLP) and 94% (CNN) without normalization.
The canonical data set is generated with seed 42 (``dataset.seed``).
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

MODELS = {
    # the paper's MLP: two hidden layers of 100 ReLU units
    "mlp": {"kind": "mlp", "depth": 2, "width": 100},
    # the paper's CNN: three stride-2 convolutions with 25 channels, then a linear layer
    "cnn": {"kind": "cnn", "depth": 3, "width": 25, "kernel_size": 5, "stride": 2},
    "logistic": {"kind": "mlp", "depth": 0, "width": 100},
}
REFERENCE = {"logistic": "32%", "mlp": "68%", "cnn": "94%"}


def _parse(arg: str | None) -> tuple[str, str]:
    parts = [p.strip() for p in (arg or "cnn").split(",") if p.strip()]
    model = next((p for p in parts if p in MODELS), "cnn")
    size = next((p for p in parts if p in ("tiny", "full")), "full")
    unknown = [p for p in parts if p not in MODELS and p not in ("tiny", "full")]
    if unknown:
        raise ValueError(f"configs/mnist1d.py: unknown argument(s) {unknown}; use "
                         f"<model>[,<size>] with model in {sorted(MODELS)}, size tiny|full")
    return model, size


def _techniques(config: ml_collections.ConfigDict, model: str) -> None:
    config.techniques.none = technique()
    if model == "logistic":  # no hidden layers: nothing to normalize or drop out
        config.techniques.l2 = technique(l2=1e-3)
        return
    config.techniques.batch = technique("batch")
    config.techniques.layer = technique("layer")
    config.techniques.group = technique("group", num_groups=5)
    config.techniques.weight = technique("weight")
    config.techniques.dropout = technique(dropout=0.1)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    model, size = _parse(arg)
    config = base_config()
    config.name = f"MNIST-1D {model} ({size})"
    config.notes = (f"Reference without normalization (Greydanus 2020): {REFERENCE[model]} "
                    "test accuracy with Adam, lr 1e-2, batch 100, 6000 steps.")
    config.dataset.name = "mnist1d"
    config.dataset.seed = 42
    config.dataset.options = {"num_samples": 5000 if size == "full" else 1000}
    config.model.update(MODELS[model])
    config.optimizer.update(name="adam", learning_rate=1e-2, schedule="constant")
    config.batch_size = 100
    config.steps = 6000 if size == "full" else 300
    config.log_every = 250 if size == "full" else 50
    config.eval_train_examples = 0
    config.num_seeds = 3 if size == "full" else 2
    _techniques(config, model)
    return config

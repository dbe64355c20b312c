"""Claim: BatchNorm degrades at tiny batch sizes; GroupNorm and LayerNorm do not (Wu & He 2018).

    python -m experiments.studies --only bn_batch_size
    python -m experiments --config configs/claim_bn_batch_size.py:mlp_b2 --workdir runs/bs_mlp2

Digits, one run per model and batch size (part ``<mlp|cnn>_b<batch size>``), each training
``EPOCHS`` epochs (equal epochs: steps = epochs x N / batch size) with SGD + momentum 0.9 and
the linear scaling rule lr = 0.1 x batch / 32, 5 seeds; techniques BatchNorm (eval mode with
its running averages), GroupNorm (8 groups) and LayerNorm.  The MLP has 3 hidden layers of
64; the CNN three 3x3 stride-2 convolutions with 32 channels (8x8 -> 1x1).
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from experiments import metrics
from experiments import study_figures as fig
from experiments.config import base_config, technique
from experiments.data import load_dataset
from experiments.studies import Section, Study, markdown_table

TITLE = "BatchNorm degrades at tiny batch sizes, GroupNorm and LayerNorm do not"
CLAIM = ("BatchNorm's error rises as the batch shrinks while GroupNorm and LayerNorm are "
         "unaffected (Wu & He 2018, Figure 1: ResNet-50 on ImageNet, BN 23.6% error at 32 "
         "images per GPU vs 34.7% at 2; GN 24.1% at every size).")
BATCH_SIZES = {"mlp": (2, 4, 8, 16, 32), "cnn": (2, 8, 32)}
EPOCHS = 5
LABELS = {"batch": "BatchNorm", "group": "GroupNorm (8 groups)", "layer": "LayerNorm"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    sizes = {"mlp": (2, 32)} if tiny else BATCH_SIZES
    return tuple(f"{kind}_b{b}" for kind, bs in sizes.items() for b in bs)


def _parse(arg: str | None) -> tuple[str, int]:
    kind, _, b = (arg or "mlp_b32").partition("_b")
    if kind not in BATCH_SIZES or not b.isdigit() or int(b) < 1:
        raise ValueError(f"configs/claim_bn_batch_size.py: argument must be <mlp|cnn>_b<batch "
                         f"size>, e.g. mlp_b2; got {arg!r}")
    return kind, int(b)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    kind, batch = _parse(arg)
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
    config.num_seeds = 5
    config.techniques.batch = technique("batch")
    config.techniques.group = technique("group", num_groups=8)
    config.techniques.layer = technique("layer")
    return config


def _by_model(study: Study) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for part in study.parts:
        kind, batch = _parse(part)
        out.setdefault(kind, {})[batch] = part
    return out


def _error(study: Study, part: str, tech: str) -> np.ndarray:
    """Per-seed final test error in %; a diverged run counts as chance (90%)."""
    return 100 * (1 - study.parts[part].final(tech, "test/accuracy", failed=0.1))


def _figure(study: Study, models: dict[str, dict[int, str]]) -> Path:
    f, axes = fig.panels(len(models))
    for ax, (kind, sizes) in zip(axes, models.items(), strict=True):
        bs = sorted(sizes)
        for i, tech in enumerate(LABELS):
            errors = np.stack([_error(study, sizes[b], tech) for b in bs])
            fig.sweep(ax, bs, errors, label=LABELS[tech], c=fig.color(i), logx=False)
        ax.set_xscale("log", base=2)
        ax.set_xticks(bs, [str(b) for b in bs])
        ax.set(xlabel="batch size (equal epochs)", ylabel="final test error (%)",
               title=f"{kind.upper()}: test error (" + fig.BAND + ")")
        ax.legend(fontsize=7)
    return fig.save(f, study.figure("batch_size"))


def analyze(study: Study) -> Section:
    models = _by_model(study)
    rows, checks = [], []
    for kind, sizes in models.items():
        bs = sorted(sizes)
        for b in bs:
            rows.append([kind.upper(), str(b), str(study.parts[sizes[b]].config.steps),
                         *[metrics.spread(_error(study, sizes[b], t)).format(".1f")
                           for t in LABELS]])
        if len(bs) < 2:
            continue
        rise = {t: _error(study, sizes[bs[0]], t) - _error(study, sizes[bs[-1]], t)
                for t in LABELS}
        for other in ("group", "layer"):
            checks.append(metrics.check(
                f"{kind.upper()}: rise in test error (points) from batch {bs[-1]} to {bs[0]}",
                metrics.compare(rise["batch"], rise[other], better="higher"), expect="a",
                labels=("BN", LABELS[other]), fmt=".1f"))
    first = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"digits; MLP 3x64 and CNN 3 x (3x3 conv, stride 2, 32 channels), ReLU; batch sizes "
         f"{', '.join(f'{k.upper()} {v}' for k, v in BATCH_SIZES.items())}; {EPOCHS} epochs "
         f"each; SGD momentum 0.9, lr 0.1 x batch/32; {first.num_seeds} seeds.",
         "Test error in eval mode (BatchNorm with its running averages, momentum 0.9); the "
         "rise is the per-seed error at the smallest minus at the largest batch."),
        [("Final test error against the batch size (equal epochs).",
          _figure(study, models))],
        markdown_table(["model", "batch", "steps", *[f"test error %, {v}" for v in
                                                     LABELS.values()]], rows),
        checks)

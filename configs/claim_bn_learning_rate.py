"""Claim: BatchNorm tolerates larger learning rates (Ioffe & Szegedy 2015, Sec. 3.3).

    python -m experiments.studies --only bn_learning_rate
    python -m experiments --config configs/claim_bn_learning_rate.py --workdir runs/bn_lr

A 6-hidden-layer ReLU MLP (width 64) on digits, SGD with momentum 0.9, batch 64, 400 steps,
5 seeds, with and without BatchNorm, over a learning-rate grid from 0.003 to 30.  Measured:
final test accuracy per rate, and per seed the largest rate that still trains (final test
accuracy >= ``TRAINS``; a diverged run does not train).
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from experiments import metrics
from experiments import study_figures as fig
from experiments.config import base_config, technique
from experiments.studies import Section, Study, markdown_table

TITLE = "BatchNorm tolerates larger learning rates"
CLAIM = ("With Batch Normalization, higher learning rates train without divergence "
         "(Ioffe & Szegedy 2015, Sec. 3.3: BN makes training more resilient to the parameter "
         "scale, so larger rates do not blow up).")
LEARNING_RATES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
TRAINS = 0.8  # final test accuracy that counts as "trains" (chance: 0.1)
LABELS = {"none": "no norm", "batch": "BatchNorm"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: BN tolerates larger learning rates"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=6, width=64, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.1, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 400, 100, 64
    config.num_seeds = 5
    config.sweep.learning_rate = LEARNING_RATES
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config


def _accuracy(study: Study, tech: str) -> tuple[np.ndarray, np.ndarray]:
    """Learning rates and final test accuracy (rates, seeds); diverged runs count as 0."""
    return study.parts["main"].sweep(tech, "test/accuracy", "learning_rate", failed=0.0)


def _largest(study: Study, tech: str) -> np.ndarray:
    lrs, acc = _accuracy(study, tech)
    return np.asarray([metrics.largest_passing(lrs, acc[:, s], TRAINS)
                       for s in range(acc.shape[1])])


def _figure(study: Study) -> Path:
    f, (ax,) = fig.panels(1, width=6.5)
    for i, tech in enumerate(LABELS):
        lrs, acc = _accuracy(study, tech)
        fig.sweep(ax, lrs, acc, label=LABELS[tech], c=fig.color(i))
    ax.axhline(TRAINS, color="gray", linestyle=":", label=f"'trains' threshold {TRAINS:g}")
    ax.set(xlabel="learning rate", ylabel="final test accuracy (diverged = 0)",
           title="final test accuracy (" + fig.BAND + ")")
    ax.legend(fontsize=7)
    return fig.save(f, study.figure("learning_rate"))


def analyze(study: Study) -> Section:
    part = study.parts["main"]
    acc = {t: _accuracy(study, t) for t in LABELS}
    status = {t: [part.summary["results"][c]["status"] for c in part.cells(t)] for t in LABELS}
    rows = []
    for i, lr in enumerate(acc["none"][0]):
        rows.append([f"{lr:g}", *[metrics.spread(acc[t][1][i]).format(".3f") + _mark(status[t][i])
                                  for t in LABELS]])
    largest = {t: _largest(study, t) for t in LABELS}
    rows.append(["largest rate that trains", *[metrics.spread(largest[t]).format("g")
                                               for t in LABELS]])
    checks = [metrics.check("largest learning rate that trains",
                            metrics.compare(largest["batch"], largest["none"], better="higher"),
                            expect="a", labels=("BN", "no norm"), fmt="g")]
    c = part.config
    return Section(
        TITLE, CLAIM,
        (f"digits, MLP {c.model.depth}x{c.model.width} ReLU, SGD momentum 0.9, batch "
         f"{c.batch_size}, {c.steps} steps, {c.num_seeds} seeds, learning rates "
         f"{LEARNING_RATES[0]:g} to {LEARNING_RATES[-1]:g}.",
         f"'Trains' = final test accuracy >= {TRAINS:g}; a run whose loss became non-finite "
         f"counts as accuracy 0 (the runner stops a cell when any seed diverges)."),
        [("Final test accuracy against the learning rate.", _figure(study))],
        markdown_table(["learning rate", "test accuracy, no norm", "test accuracy, BN"], rows),
        checks, ["(d) = diverged."])


def _mark(status: str) -> str:
    return "" if status == "ok" else " (d)"

"""Claim: BatchNorm makes training less sensitive to the weight-initialization scale.

    python -m experiments.studies --only bn_init_scale
    python -m experiments --config configs/claim_bn_init_scale.py --workdir runs/bn_init

A 6-hidden-layer ReLU MLP (width 64) on digits, every kernel multiplied by an init scale from
0.1 to 10 (LeCun-normal otherwise), SGD with momentum 0.9, learning rate 0.03, batch 64,
400 steps, 5 seeds, with and without BatchNorm.  Measured per seed: the range (max - min) of
the final test accuracy over the scales, and the worst accuracy over the scales.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from experiments import metrics
from experiments import study_figures as fig
from experiments.config import base_config, technique
from experiments.studies import Section, Study, markdown_table

TITLE = "BatchNorm makes training insensitive to the initialization scale"
CLAIM = ("Batch Normalization makes training less sensitive to the initial weight scale: "
         "BN(aW u) = BN(W u), so the layer's output and the Jacobian do not depend on the scale "
         "a (Ioffe & Szegedy 2015, Sec. 3.3; \"less careful initialization\", abstract).")
SCALES = (0.1, 0.3, 1.0, 3.0, 10.0)
LABELS = {"none": "no norm", "batch": "BatchNorm"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: BN and the initialization scale"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=6, width=64, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.03, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 400, 50, 64
    config.num_seeds = 5
    config.sweep.init_scale = SCALES
    config.techniques.none = technique()
    config.techniques.batch = technique("batch")
    return config


def _accuracy(study: Study, tech: str) -> tuple[np.ndarray, np.ndarray]:
    """Init scales and final test accuracy (scales, seeds); diverged runs count as chance."""
    chance = 0.1
    return study.parts["main"].sweep(tech, "test/accuracy", "init_scale", failed=chance)


def _figure(study: Study) -> Path:
    f, (ax1, ax2) = fig.panels(2)
    for i, tech in enumerate(LABELS):
        scales, acc = _accuracy(study, tech)
        fig.sweep(ax1, scales, acc, label=LABELS[tech], c=fig.color(i))
        part = study.parts["main"]
        for j, cell in enumerate(part.cells(tech)):
            if scales[j] in (min(scales), 1.0, max(scales)) and part.ok(cell):
                steps, loss = part.curves(cell, "train/loss")
                fig.curve(ax2, steps, loss, label=f"{LABELS[tech]}, scale {scales[j]:g}",
                          c=fig.color(i), linestyle={0: ":", 1: "-"}.get(j, "--"))
    ax1.set(xlabel="init scale (multiplies every kernel)", ylabel="final test accuracy",
            title="final test accuracy (" + fig.BAND + ")")
    fig.log_scale(ax2, [1.0])
    ax2.set(xlabel="step", ylabel="training loss", title="training loss at three scales")
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
    return fig.save(f, study.figure("init_scale"))


def analyze(study: Study) -> Section:
    acc = {t: _accuracy(study, t) for t in LABELS}
    rows = [[f"{s:g}", *[metrics.spread(acc[t][1][i]).format(".3f") for t in LABELS]]
            for i, s in enumerate(acc["none"][0])]
    spread_ = {t: acc[t][1].max(axis=0) - acc[t][1].min(axis=0) for t in LABELS}
    worst = {t: acc[t][1].min(axis=0) for t in LABELS}
    rows.append(["range over scales", *[metrics.spread(spread_[t]).format(".3f")
                                        for t in LABELS]])
    rows.append(["worst over scales", *[metrics.spread(worst[t]).format(".3f") for t in LABELS]])
    checks = [metrics.check("range of test accuracy over init scales",
                            metrics.compare(spread_["batch"], spread_["none"], better="lower"),
                            expect="a", labels=("BN", "no norm")),
              metrics.check("worst test accuracy over init scales",
                            metrics.compare(worst["batch"], worst["none"], better="higher"),
                            expect="a", labels=("BN", "no norm"))]
    c = study.parts["main"].config
    return Section(
        TITLE, CLAIM,
        (f"digits, MLP {c.model.depth}x{c.model.width} ReLU, LeCun-normal kernels times a scale "
         f"in {', '.join(f'{s:g}' for s in SCALES)}; SGD momentum 0.9, lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds.",
         "Per seed: range (max - min) and worst final test accuracy over the scales; a "
         "diverged run counts as chance (0.1)."),
        [("Left: final test accuracy against the init scale. Right: training loss at the "
          "smallest, unit and largest scale.", _figure(study))],
        markdown_table(["init scale", "test accuracy, no norm", "test accuracy, BN"], rows),
        checks)

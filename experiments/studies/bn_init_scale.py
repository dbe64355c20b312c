"""Study 'bn_init_scale': BatchNorm makes training insensitive to the initialization scale.

Its runs are the configs of `configs/claim_bn_init_scale.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_bn_init_scale import SCALES
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "BatchNorm makes training insensitive to the initialization scale"
CLAIM = ("Batch Normalization makes training less sensitive to the initial weight scale: "
         "BN(aW u) = BN(W u), so the layer's output and the Jacobian do not depend on the scale "
         "a (Ioffe & Szegedy 2015, Sec. 3.3; \"less careful initialization\", abstract).")
LABELS = {"none": "no norm", "batch": "BatchNorm"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


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
        styles = {min(scales): ":", 1.0: "-", max(scales): "--"}
        for j, cell in enumerate(part.cells(tech)):
            if scales[j] not in styles:
                continue
            try:
                steps, loss = part.curves(cell, "train/loss")
            except KeyError:  # diverged before its first log
                steps, loss = np.zeros(0), np.zeros((1, 0))
            mark = "" if part.ok(cell) else " (diverged)"
            fig.curve(ax2, steps, loss, label=f"{LABELS[tech]}, scale {scales[j]:g}{mark}",
                      c=fig.color(i), linestyle=styles[scales[j]])
    ax1.set(xlabel="init scale (multiplies every kernel)", ylabel="final test accuracy",
            title="final test accuracy (" + fig.BAND + ")")
    fig.log_scale(ax2, [1.0])
    ax2.set(xlabel="step", ylabel="training loss", title="training loss at three scales")
    for ax in (ax1, ax2):
        ax.legend()
    return fig.save(f, study.figure("init_scale"))


def analyze(study: Study) -> Section:
    acc = {t: _accuracy(study, t) for t in LABELS}
    rows = [[f"{s:g}", *[decision.spread(acc[t][1][i]).format(".3f") for t in LABELS]]
            for i, s in enumerate(acc["none"][0])]
    spread_ = {t: acc[t][1].max(axis=0) - acc[t][1].min(axis=0) for t in LABELS}
    worst = {t: acc[t][1].min(axis=0) for t in LABELS}
    rows.append(["range over scales", *[decision.spread(spread_[t]).format(".3f")
                                        for t in LABELS]])
    rows.append(["worst over scales", *[decision.spread(worst[t]).format(".3f") for t in LABELS]])
    checks = [decision.check("range of test accuracy over init scales",
                            decision.compare(spread_["batch"], spread_["none"], better="lower"),
                            expect="a", labels=("BN", "no norm")),
              decision.check("worst test accuracy over init scales",
                            decision.compare(worst["batch"], worst["none"], better="higher"),
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

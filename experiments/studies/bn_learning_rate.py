"""Study 'bn_learning_rate': BatchNorm tolerates larger learning rates.

Its runs are the configs of `configs/claim_bn_learning_rate.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_bn_learning_rate import LEARNING_RATES
from experiments.studies import decision, metrics
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "BatchNorm tolerates larger learning rates"
CLAIM = ("With Batch Normalization, higher learning rates train without divergence "
         "(Ioffe & Szegedy 2015, Sec. 3.3: BN makes training more resilient to the parameter "
         "scale, so larger rates do not blow up).")
TRAINS = 0.8  # final test accuracy that counts as "trains" (chance: 0.1)
LABELS = {"none": "no norm", "batch": "BatchNorm"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


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
    ax.legend()
    return fig.save(f, study.figure("learning_rate"))


def analyze(study: Study) -> Section:
    part = study.parts["main"]
    acc = {t: _accuracy(study, t) for t in LABELS}
    status = {t: [part.summary["results"][c]["status"] for c in part.cells(t)] for t in LABELS}
    rows = []
    for i, lr in enumerate(acc["none"][0]):
        rows.append([f"{lr:g}", *[decision.spread(acc[t][1][i]).format(".3f") + _mark(status[t][i])
                                  for t in LABELS]])
    largest = {t: _largest(study, t) for t in LABELS}
    rows.append(["largest rate that trains", *[decision.spread(largest[t]).format("g")
                                               for t in LABELS]])
    checks = [decision.check("largest learning rate that trains",
                            decision.compare(largest["batch"], largest["none"], better="higher"),
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

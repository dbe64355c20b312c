"""Study 'bn_convergence': BatchNorm speeds up convergence.

Its runs are the configs of `configs/claim_bn_convergence.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_bn_convergence import LEARNING_RATES, SHARED_LR
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Part, Section, Study, markdown_table

TITLE = "BatchNorm speeds up convergence"
CLAIM = ("Batch Normalization lets a network reach a given training loss in fewer steps "
         "(Ioffe & Szegedy 2015, Figure 1a; 14x fewer steps on ImageNet).")
TARGET = 0.1
LABELS = {"none": "no norm", "batch": "BatchNorm"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def _steps_to_target(study: Study, cell: str) -> np.ndarray:
    return study.parts["main"].steps_to(cell, TARGET)


def _best(study: Study, technique: str) -> tuple[str, np.ndarray]:
    """The cell with the fewest median steps to the target (ties: the smaller rate)."""
    return study.parts["main"].fastest(technique, TARGET)


def _figure(study: Study) -> Path:
    part = study.parts["main"]
    f, (ax1, ax2) = fig.panels(2)
    for i, tech in enumerate(LABELS):
        best, _ = _best(study, tech)
        lr = part.summary["results"][best]["hparams"]["learning_rate"]
        steps, values = part.curves(best, "train/loss")
        fig.curve(ax1, steps, values, label=f"{LABELS[tech]}, own best lr {lr:g}",
                  c=fig.color(i))
        shared = next(c for c in part.cells(tech)
                      if part.summary["results"][c]["hparams"]["learning_rate"] == SHARED_LR)
        if part.ok(shared):
            steps, values = part.curves(shared, "train/loss")
            fig.curve(ax1, steps, values, label=f"{LABELS[tech]}, shared lr {SHARED_LR:g}",
                      c=fig.color(i), linestyle="--")
        per_cell = np.stack([_steps_to_target(study, c) for c in part.cells(tech)])
        lrs = [part.summary["results"][c]["hparams"]["learning_rate"] for c in part.cells(tech)]
        fig.sweep(ax2, lrs, np.where(np.isinf(per_cell), np.nan, per_cell), label=LABELS[tech],
                  c=fig.color(i))
    ax1.axhline(TARGET, color="gray", linestyle=":", label=f"target {TARGET:g}")
    fig.log_scale(ax1, [TARGET])
    ax1.set(xlabel="step", ylabel="training loss",
            title="training loss (" + fig.BAND + ")")
    ax2.set(xlabel="learning rate", ylabel=f"steps to training loss {TARGET:g}",
            title="steps to target (missing: never reached)")
    for ax in (ax1, ax2):
        ax.legend()
    return fig.save(f, study.figure("convergence"))


def analyze(study: Study) -> Section:
    part = study.parts["main"]
    rows, table = [], {}
    for tech in LABELS:
        for cell in part.cells(tech):
            lr = part.summary["results"][cell]["hparams"]["learning_rate"]
            table.setdefault(lr, {})[tech] = (_steps_to_target(study, cell),
                                             part.final(cell, "train/loss"))
    for lr, entry in table.items():
        rows.append([f"{lr:g}", *[decision.spread(entry[t][0]).format(".0f") for t in LABELS],
                     *[decision.spread(entry[t][1]).format(".3f") for t in LABELS]])
    (bn_cell, bn_best), (none_cell, none_best) = _best(study, "batch"), _best(study, "none")
    checks = [decision.check(f"steps to training loss {TARGET:g} at each model's best rate",
                            decision.compare(bn_best, none_best, better="lower"), expect="a",
                            labels=(f"BN (lr {_lr(part, bn_cell):g})",
                                    f"no norm (lr {_lr(part, none_cell):g})"), fmt=".0f"),
              decision.check(f"at the shared rate {SHARED_LR:g}",
                            decision.compare(table[SHARED_LR]["batch"][0],
                                            table[SHARED_LR]["none"][0], better="lower"),
                            expect="a", labels=("BN", "no norm"), fmt=".0f")]
    c = part.config
    return Section(
        TITLE, CLAIM,
        (f"digits, MLP {c.model.depth}x{c.model.width} {c.model.activation}, SGD momentum 0.9, "
         f"batch {c.batch_size}, {c.steps} steps, {c.num_seeds} seeds, learning rates "
         f"{', '.join(f'{x:g}' for x in LEARNING_RATES)}.",
         f"Steps until the training loss (whole training set, eval mode, logged every "
         f"{c.log_every} steps, interpolated) first reaches {TARGET:g}."),
        [("Left: training loss at each model's best rate (solid) and at the shared rate "
          "(dashed). Right: steps to the target against the learning rate.", _figure(study))],
        markdown_table(["learning rate", "steps, no norm", "steps, BN", "final train loss, "
                        "no norm", "final train loss, BN"], rows),
        checks)


def _lr(part: Part, cell: str) -> float:
    return part.summary["results"][cell]["hparams"]["learning_rate"]

"""Study 'resnet_learning_rate': on real images, BatchNorm trains faster and at larger rates.

Its runs are the config of `configs/claim_resnet_learning_rate.py` (the setup is described
there and in `configs/resnet_mnist.py`); each technique's learning rate is tuned on the
validation split, and test errors are reported at the chosen rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs import resnet_mnist
from configs.claim_resnet_learning_rate import LEARNING_RATES
from experiments.studies import decision, metrics
from experiments.studies import figures as fig
from experiments.studies.base import Part, Section, Study, markdown_table

TITLE = "On real images: BatchNorm trains faster and at larger learning rates (ResNet, MNIST)"
CLAIM = ("Batch Normalization lets a network train with higher learning rates and reach a "
         "given training loss in fewer steps (Ioffe & Szegedy 2015, Sec. 3.3 and Figure 1a), "
         "here for a ResNet on real digits with every technique's rate tuned on a validation "
         "split.")
LABELS = {"none": "no norm", "batch": "BatchNorm"}
TRAINS = 0.9  # validation accuracy that counts as "trains" at a rate
TARGET = 0.3  # training loss for "steps to target"
TINY_TECHNIQUES = {"main": ("batch",)}
TINY_SWEEP = {"learning_rate": (0.1, 1.0)}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def _val(part: Part, tech: str) -> tuple[np.ndarray, np.ndarray]:
    """Rates and final validation accuracy (rates, seeds); a diverged cell counts as 0."""
    return part.sweep(tech, "val/accuracy", "learning_rate", failed=0.0)


def _largest(part: Part, tech: str) -> np.ndarray:
    lrs, acc = _val(part, tech)
    return np.asarray([metrics.largest_passing(lrs, acc[:, s], TRAINS)
                       for s in range(acc.shape[1])])


def _figure(study: Study, part: Part, chosen: dict[str, str]) -> Path:
    f, (ax1, ax2) = fig.panels(2)
    for i, tech in enumerate(chosen):
        lrs, acc = _val(part, tech)
        fig.sweep(ax1, lrs, 100 * acc, label=LABELS[tech], c=fig.color(i))
        steps, values = part.curves(chosen[tech], "train/loss")
        fig.curve(ax2, steps, values, c=fig.color(i),
                  label=f"{LABELS[tech]} (lr {part.hparam(chosen[tech], 'learning_rate'):g})")
    ax1.axhline(100 * TRAINS, color="gray", linestyle=":", label=f"'trains': {TRAINS:.0%}")
    ax1.set(xlabel="learning rate", ylabel="validation accuracy (%; diverged = 0)",
            title=f"validation accuracy ({fig.BAND})")
    ax2.axhline(TARGET, color="gray", linestyle=":", label=f"target {TARGET:g}")
    fig.log_scale(ax2, [TARGET])
    ax2.set(xlabel="step (batch 32)", ylabel="training loss",
            title="training loss at each one's chosen rate")
    for ax in (ax1, ax2):
        ax.legend()
    return fig.save(f, study.figure("learning_rate"))


def analyze(study: Study) -> Section:
    part = study.parts["main"]
    labels = study.labels(LABELS)
    chosen = {t: part.tuned(t) for t in labels}
    test_err = {t: 100 * (1 - part.final(chosen[t], "test/accuracy")) for t in labels}
    largest = {t: _largest(part, t) for t in labels}
    steps = {t: part.steps_to(chosen[t], TARGET) for t in labels}
    rows = []
    for i, lr in enumerate(_val(part, next(iter(labels)))[0]):
        rows.append([f"val. accuracy % at lr {lr:g}",
                     *[decision.spread(100 * _val(part, t)[1][i]).format(".1f")
                       for t in labels]])
    rows += [["chosen rate (validation)",
              *[f"{part.hparam(chosen[t], 'learning_rate'):g}" for t in labels]],
             ["test error % at the chosen rate",
              *[decision.spread(test_err[t]).format(".2f") for t in labels]],
             [f"largest rate with val. accuracy >= {TRAINS:.0%}",
              *[decision.spread(largest[t]).format("g") for t in labels]],
             [f"steps to training loss {TARGET:g}",
              *[decision.spread(steps[t]).format(".0f") for t in labels]]]
    checks = [] if study.tiny else [
        decision.check(f"largest rate with validation accuracy >= {TRAINS:.0%}",
                       decision.compare(largest["batch"], largest["none"], better="higher"),
                       expect="a", labels=("BN", "no norm"), fmt="g"),
        decision.check(f"steps to training loss {TARGET:g} at each one's chosen rate",
                       decision.compare(steps["batch"], steps["none"], better="lower"),
                       expect="a", labels=("BN", "no norm"), fmt=".0f"),
        decision.check("test error % at each one's chosen rate",
                       decision.compare(test_err["batch"], test_err["none"], better="lower"),
                       expect="a", labels=("BN", "no norm"), fmt=".2f")]
    edge = [LABELS[t] for t in labels
            if part.hparam(chosen[t], "learning_rate") in (LEARNING_RATES[0], LEARNING_RATES[-1])]
    notes = [f"Chosen at the edge of the grid: {', '.join(edge)}." if edge else
             "Every chosen rate lies inside the grid."]
    c = part.config
    return Section(
        TITLE, CLAIM,
        (f"{resnet_mnist.DATA}; {resnet_mnist.MODEL}; SGD momentum 0.9, batch {c.batch_size}, "
         f"{c.steps} steps, {c.num_seeds} seeds, learning rates "
         f"{', '.join(f'{x:g}' for x in LEARNING_RATES)}.",
         "Each technique's rate is the one with the best median validation accuracy; test "
         "errors are at that rate. 'Steps to target': the training loss (1,000 training "
         f"images, eval mode, logged every {c.log_every} steps, interpolated) first at "
         f"{TARGET:g}; a diverged cell counts as validation accuracy 0."),
        [("(a) Validation accuracy against the learning rate. (b) Training loss at each "
          "technique's chosen rate.", _figure(study, part, chosen))],
        markdown_table(["", *labels.values()], rows),
        checks, notes)

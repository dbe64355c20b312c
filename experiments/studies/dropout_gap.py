"""Study 'dropout_gap': Dropout narrows the train/test gap (vs L1 and L2).

Its runs are the configs of `configs/claim_dropout_gap.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_dropout_gap import STRENGTHS
from experiments.studies import decision, metrics
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "Dropout narrows the train/test gap (vs L1 and L2)"
CLAIM = ("Dropout reduces overfitting: a smaller gap between training and test accuracy and "
         "better test accuracy than without it, and it compares well with L1/L2 weight "
         "penalties (Srivastava et al. 2014, Sec. 6-7).")
NAMES = {"dropout": "dropout rate", "l1": "L1 weight", "l2": "L2 weight"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return tuple(STRENGTHS)


def _finals(study: Study, kind: str) -> dict[str, np.ndarray]:
    """Strengths and per-seed train, validation and test accuracy and the train-test gap,
    each (strengths, seeds)."""
    part = study.parts[kind]
    xs, train = part.sweep(kind, "train/accuracy", kind)
    _, val = part.sweep(kind, "val/accuracy", kind)
    _, test = part.sweep(kind, "test/accuracy", kind)
    return {"x": xs, "train": train, "val": val, "test": test,
            "gap": metrics.generalization_gap(train, test)}


def _best(finals: dict[str, np.ndarray]) -> int:
    """Index of the strength with the best median validation accuracy (NaN-safe)."""
    med = np.nanmedian(np.where(np.isnan(finals["val"]), -1.0, finals["val"]), axis=1)
    return int(np.argmax(med))


def _figure(study: Study, finals: dict[str, dict[str, np.ndarray]]) -> Path:
    f, axes = fig.panels(len(finals), width=4.5)
    for ax, (kind, d) in zip(axes, finals.items(), strict=True):
        x = np.arange(len(d["x"]))
        for i, key in enumerate(("train", "val", "test")):
            fig.curve(ax, x, 100 * d[key].T, label=f"{key} accuracy", c=fig.color(i))
        fig.curve(ax, x, 100 * d["gap"].T, label="gap (train - test)", c=fig.color(3),
                  linestyle="--")
        ax.set_xticks(x, [f"{v:g}" for v in d["x"]])
        ax.set(xlabel=NAMES[kind], ylabel="accuracy / gap (%)",
               title=f"{NAMES[kind]} (" + fig.BAND + ")")
        ax.legend()
    return fig.save(f, study.figure("gap"))


def analyze(study: Study) -> Section:
    finals = {k: _finals(study, k) for k in study.parts}
    rows = []
    for kind, d in finals.items():
        for i, x in enumerate(d["x"]):
            mark = " (chosen)" if i == _best(d) else ""
            rows.append([NAMES[kind], f"{x:g}{mark}",
                         *[decision.spread(100 * d[k][i]).format(".1f")
                           for k in ("train", "val", "test", "gap")]])
    drop = finals["dropout"]
    chosen = _best(drop)
    best = {k: d["test"][_best(d)] for k, d in finals.items()}
    checks = [
        decision.check("train - test accuracy gap (points)",
                       decision.compare(100 * drop["gap"][chosen], 100 * drop["gap"][0],
                                        better="lower"),
                       expect="a", labels=(f"dropout {drop['x'][chosen]:g} (chosen)",
                                           "no dropout"), fmt=".1f"),
        decision.check("test accuracy %",
                       decision.compare(100 * best["dropout"], 100 * drop["test"][0],
                                        better="higher"),
                       expect="a", labels=(f"dropout {drop['x'][chosen]:g} (chosen)",
                                           "no dropout"), fmt=".1f")]
    for other in ("l1", "l2"):
        if other in finals:
            checks.append(decision.check(
                "test accuracy % at the chosen strengths",
                decision.compare(100 * best["dropout"], 100 * best[other], better="higher"),
                expect="a", labels=("dropout", f"{other.upper()} "
                                    f"({finals[other]['x'][_best(finals[other])]:g})"),
                fmt=".1f"))
    edge = [NAMES[k] for k, d in finals.items() if _best(d) in (0, len(d["x"]) - 1)]
    notes = [f"Chosen at the edge of its grid: {', '.join(edge)}." if edge else
             "Every chosen strength lies inside its grid."]
    c = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"MNIST-1D, {c.dataset.options.num_samples} samples (1,200 train / 400 validation / "
         f"400 test), MLP "
         f"{c.model.depth}x{c.model.width} ReLU, Adam lr {c.optimizer.learning_rate:g}, batch "
         f"{c.batch_size}, {c.steps} steps, {c.num_seeds} seeds.",
         "Final accuracies on the whole training set (eval mode, no dropout), the validation "
         "and the test set; each regularizer's strength is chosen by the best median "
         "validation accuracy, and its test accuracy reported there."),
        [("Train and test accuracy and their gap against each regularizer's strength.",
          _figure(study, finals))],
        markdown_table(["regularizer", "strength", "train accuracy %", "val. accuracy %",
                        "test accuracy %", "gap (points)"], rows),
        checks, notes)

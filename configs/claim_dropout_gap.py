"""Claim: dropout narrows the train/test gap; compared with L1 and L2 at several strengths.

    python -m experiments.studies --only dropout_gap
    python -m experiments --config configs/claim_dropout_gap.py:dropout --workdir runs/dropout

MNIST-1D with 1600 training examples (easy to overfit), MLP 2x256 ReLU, Adam lr 1e-3, batch
100, 1500 steps, 5 seeds; one part per regularizer, each a vmapped sweep of its strength
(0 = unregularized): ``dropout`` (drop probability after each hidden block), ``l1``
(``+ l1 * sum |w|``) and ``l2`` (``+ l2/2 * sum w^2``), on kernels.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from experiments import metrics
from experiments import study_figures as fig
from experiments.config import base_config, technique
from experiments.studies import Section, Study, markdown_table

TITLE = "Dropout narrows the train/test gap (vs L1 and L2)"
CLAIM = ("Dropout reduces overfitting: a smaller gap between training and test accuracy and "
         "better test accuracy than without it, and it compares well with L1/L2 weight "
         "penalties (Srivastava et al. 2014, Sec. 6-7).")
STRENGTHS = {"dropout": (0.0, 0.1, 0.3, 0.5), "l1": (0.0, 1e-5, 1e-4, 1e-3),
             "l2": (0.0, 1e-4, 1e-3, 1e-2)}
NAMES = {"dropout": "dropout rate", "l1": "L1 weight", "l2": "L2 weight"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return tuple(STRENGTHS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    kind = arg or "dropout"
    if kind not in STRENGTHS:
        raise ValueError(f"configs/claim_dropout_gap.py: argument must be one of "
                         f"{sorted(STRENGTHS)}, got {arg!r}")
    config = base_config()
    config.name = f"claim: dropout and the generalization gap ({kind})"
    config.dataset.name = "mnist1d"
    config.dataset.seed = 42
    config.dataset.options = {"num_samples": 2000}
    config.model.update(kind="mlp", depth=2, width=256, activation="relu")
    config.optimizer.update(name="adam", learning_rate=1e-3)
    config.steps, config.log_every, config.batch_size = 1500, 250, 100
    config.eval_train_examples = 0
    config.num_seeds = 5
    config.sweep[kind] = STRENGTHS[kind]
    config.techniques[kind] = technique()
    return config


def _finals(study: Study, kind: str) -> dict[str, np.ndarray]:
    """Strengths and per-seed train accuracy, test accuracy and gap, (strengths, seeds)."""
    part = study.parts[kind]
    xs, train = part.sweep(kind, "train/accuracy", kind)
    _, test = part.sweep(kind, "test/accuracy", kind)
    return {"x": xs, "train": train, "test": test,
            "gap": metrics.generalization_gap(train, test)}


def _best(finals: dict[str, np.ndarray]) -> int:
    """Index of the strength with the best median test accuracy (NaN-safe)."""
    med = np.nanmedian(np.where(np.isnan(finals["test"]), -1.0, finals["test"]), axis=1)
    return int(np.argmax(med))


def _figure(study: Study, finals: dict[str, dict[str, np.ndarray]]) -> Path:
    f, axes = fig.panels(len(finals), width=4.5)
    for ax, (kind, d) in zip(axes, finals.items(), strict=True):
        x = np.arange(len(d["x"]))
        for i, key in enumerate(("train", "test")):
            fig.curve(ax, x, 100 * d[key].T, label=f"{key} accuracy", c=fig.color(i))
        fig.curve(ax, x, 100 * d["gap"].T, label="gap (train - test)", c=fig.color(3),
                  linestyle="--")
        ax.set_xticks(x, [f"{v:g}" for v in d["x"]])
        ax.set(xlabel=NAMES[kind], ylabel="accuracy / gap (%)",
               title=f"{NAMES[kind]} (" + fig.BAND + ")")
        ax.legend(fontsize=7)
    return fig.save(f, study.figure("gap"))


def analyze(study: Study) -> Section:
    finals = {k: _finals(study, k) for k in study.parts}
    rows = []
    for kind, d in finals.items():
        for i, x in enumerate(d["x"]):
            rows.append([NAMES[kind], f"{x:g}", *[metrics.spread(100 * d[k][i]).format(".1f")
                                                  for k in ("train", "test", "gap")]])
    drop = finals["dropout"]
    top = len(drop["x"]) - 1
    best = {k: d["test"][_best(d)] for k, d in finals.items()}
    checks = [
        metrics.check("train - test accuracy gap (points)",
                      metrics.compare(100 * drop["gap"][top], 100 * drop["gap"][0],
                                      better="lower"),
                      expect="a", labels=(f"dropout {drop['x'][top]:g}", "no dropout"),
                      fmt=".1f"),
        metrics.check("test accuracy",
                      metrics.compare(best["dropout"], drop["test"][0], better="higher"),
                      expect="a", labels=(f"best dropout ({drop['x'][_best(drop)]:g})",
                                          "no dropout"))]
    for other in ("l1", "l2"):
        if other in finals:
            checks.append(metrics.check(
                "best test accuracy", metrics.compare(best["dropout"], best[other],
                                                      better="higher"),
                expect="a", labels=("dropout", f"{other.upper()} "
                                    f"({finals[other]['x'][_best(finals[other])]:g})")))
    c = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"MNIST-1D, {c.dataset.options.num_samples} samples (80% train), MLP "
         f"{c.model.depth}x{c.model.width} ReLU, Adam lr {c.optimizer.learning_rate:g}, batch "
         f"{c.batch_size}, {c.steps} steps, {c.num_seeds} seeds.",
         "Final accuracies on the whole training set (eval mode, no dropout) and the test set; "
         "'best' strength = best median test accuracy (chosen on the test set, for every "
         "regularizer alike)."),
        [("Train and test accuracy and their gap against each regularizer's strength.",
          _figure(study, finals))],
        markdown_table(["regularizer", "strength", "train accuracy %", "test accuracy %",
                        "gap (points)"], rows),
        checks)

"""Study 'mnist1d': the MNIST-1D baselines reproduce.

Its runs are the configs of `configs/claim_mnist1d.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_mnist1d import REFERENCE
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "MNIST-1D baselines reproduce the paper"
CLAIM = ("On MNIST-1D, logistic regression reaches about 32% test accuracy, an MLP 68% and a "
         "CNN 94% (Greydanus 2020, \"Scaling down deep learning\", Adam lr 1e-2, batch 100, "
         "6000 steps).")
TOLERANCE = 0.05  # reproduced if the median is within 5 accuracy points


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("logistic", "mlp") if tiny else tuple(REFERENCE)


def _acc(study: Study, model: str) -> np.ndarray:
    return study.parts[model].final("none", "test/accuracy", failed=0.1)


def _figure(study: Study) -> Path:
    models = list(study.parts)
    f, (ax1, ax2) = fig.panels(2)
    fig.bars(ax1, models, [100 * _acc(study, m) for m in models], ylabel="test accuracy (%)")
    for i, model in enumerate(models):
        ax1.hlines(100 * REFERENCE[model], i - 0.4, i + 0.4, color="black", linestyle="--",
                   label="paper" if i == 0 else None)
        steps, acc = study.parts[model].curves("none", "test/accuracy")
        fig.curve(ax2, steps, 100 * acc, label=model, c=fig.color(i))
    ax1.legend()
    ax2.set(xlabel="step", ylabel="test accuracy (%)", title=f"test accuracy ({fig.BAND})")
    ax2.legend()
    return fig.save(f, study.figure("mnist1d"))


def analyze(study: Study) -> Section:
    rows, checks = [], []
    for model, part in study.parts.items():
        rows.append([model, decision.spread(100 * _acc(study, model)).format(".1f"),
                     decision.spread(100 * part.final("none", "train/accuracy")).format(".1f"),
                     f"{100 * REFERENCE[model]:.0f}"])
        checks.append(decision.check_near(f"{model}, test accuracy %", 100 * _acc(study, model),
                                          100 * REFERENCE[model], tolerance=100 * TOLERANCE,
                                          fmt=".1f"))
    c = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"MNIST-1D ({c.dataset.options.num_samples} samples, seed {c.dataset.seed}), Adam lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds; logistic, MLP 2x100, CNN 3x25 channels (stride 2).",
         "The paper's models without normalization; the norms are compared on MNIST-1D in "
         "the GroupNorm and LayerNorm-for-sequences studies."),
        [("(a) Final test accuracy per model (dashed: the paper) and (b) over training.",
          _figure(study))],
        markdown_table(["model", "test accuracy %", "train accuracy %", "paper %"], rows),
        checks,
        criterion=(f"the test accuracy without normalization reproduces the paper if the 95% "
                   f"bootstrap interval of its median over seeds lies within "
                   f"{100 * TOLERANCE:.0f} points of it, and does not if the interval lies "
                   f"wholly outside"))

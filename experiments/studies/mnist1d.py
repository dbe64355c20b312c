"""Study 'mnist1d': MNIST-1D baselines, with each normalization.

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

TITLE = "MNIST-1D baselines, with each normalization"
CLAIM = ("On MNIST-1D, logistic regression reaches about 32% test accuracy, an MLP 68% and a "
         "CNN 94% (Greydanus 2020, \"Scaling down deep learning\", Adam lr 1e-2, batch 100, "
         "6000 steps).")
TOLERANCE = 0.05  # reproduced if the median is within 5 accuracy points
TINY_TECHNIQUES = {"mlp": ("none", "batch")}
NORMS = {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("logistic", "mlp") if tiny else tuple(REFERENCE)


def _acc(study: Study, model: str, tech: str) -> np.ndarray:
    return study.parts[model].final(tech, "test/accuracy", failed=0.1)


def _figure(study: Study) -> Path:
    models = list(study.parts)
    f, axes = fig.panels(len(models) + 1, width=4.2)
    for ax, model in zip(axes, models, strict=False):
        techs = [t for t in NORMS if t in study.parts[model].config.techniques]
        fig.bars(ax, [NORMS[t] for t in techs], [100 * _acc(study, model, t) for t in techs],
                 ylabel="test accuracy (%)",
                 reference={f"paper ({100 * REFERENCE[model]:.0f}%)": 100 * REFERENCE[model]})
        ax.set_title(f"{model}: test accuracy ({fig.BAND})")
    part = study.parts[models[-1]]
    for i, tech in enumerate(t for t in NORMS if t in part.config.techniques):
        steps, acc = part.curves(tech, "test/accuracy")
        fig.curve(axes[-1], steps, 100 * acc, label=NORMS[tech], c=fig.color(i))
    axes[-1].set(xlabel="step", ylabel="test accuracy (%)",
                 title=f"{models[-1]}: test accuracy (" + fig.BAND + ")")
    axes[-1].legend()
    return fig.save(f, study.figure("mnist1d"))


def analyze(study: Study) -> Section:
    rows, checks, notes = [], [], []
    for model, part in study.parts.items():
        techs = [t for t in NORMS if t in part.config.techniques]
        for tech in techs:
            train = part.final(tech, "train/accuracy")
            rows.append([model, NORMS[tech], decision.spread(100 * _acc(study, model, tech))
                         .format(".1f"), decision.spread(100 * train).format(".1f"),
                         f"{100 * REFERENCE[model]:.0f}" if tech == "none" else ""])
        checks.append(decision.check_near(f"{model} without normalization, test accuracy %",
                                         100 * _acc(study, model, "none"),
                                         100 * REFERENCE[model], tolerance=100 * TOLERANCE,
                                         fmt=".1f"))
        for t in techs[1:]:
            c = decision.compare(100 * _acc(study, model, t), 100 * _acc(study, model, "none"),
                                 better="higher")
            word = {"a": "better", "b": "worse", "tie": "no difference detected"}[c.winner]
            notes.append(f"- {model}, {NORMS[t]} vs no norm: {word}; {c.format('.1f')}.")
    c = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"MNIST-1D ({c.dataset.options.num_samples} samples, seed {c.dataset.seed}), Adam lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds; logistic, MLP 2x100, CNN 3x25 channels (stride 2).",
         "The verdict is about reproducing the paper's numbers; each norm is compared with no "
         "norm by the report's usual paired test (test accuracy, points)."),
        [("Final test accuracy per model and norm (dashed: the paper), and the test accuracy "
          "of the CNN over training.", _figure(study))],
        markdown_table(["model", "norm", "test accuracy %", "train accuracy %", "paper %"],
                       rows),
        checks, notes,
        criterion=(f"the test accuracy without normalization reproduces the paper if the 95% "
                   f"bootstrap interval of its median over seeds lies within "
                   f"{100 * TOLERANCE:.0f} points of it, and does not if the interval lies "
                   f"wholly outside"))

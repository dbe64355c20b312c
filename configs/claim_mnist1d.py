"""Claim: the MNIST-1D baselines (Greydanus 2020), then each normalization added.

    python -m experiments.studies --only mnist1d
    python -m experiments --config configs/claim_mnist1d.py:cnn --workdir runs/claim_mnist1d

The paper's setup from ``configs/mnist1d.py`` (4000/1000 examples, Adam lr 1e-2, batch 100,
6000 steps): logistic regression, the MLP (2x100 ReLU) and the CNN (3 stride-2 convolutions,
25 channels), 3 seeds (long runs).  The MLP and CNN also run with BatchNorm, LayerNorm,
GroupNorm (5 groups) and WeightNorm.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from experiments import metrics
from experiments import study_figures as fig
from experiments.config import load_config, technique
from experiments.studies import Section, Study, markdown_table

TITLE = "MNIST-1D baselines, with each normalization"
CLAIM = ("On MNIST-1D, logistic regression reaches about 32% test accuracy, an MLP 68% and a "
         "CNN 94% (Greydanus 2020, \"Scaling down deep learning\", Adam lr 1e-2, batch 100, "
         "6000 steps).")
REFERENCE = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94}
TOLERANCE = 0.05  # reproduced if the median is within 5 accuracy points
TINY_TECHNIQUES = {"mlp": ("none", "batch")}
NORMS = {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm",
         "group": "GroupNorm", "weight": "WeightNorm"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("logistic", "mlp") if tiny else tuple(REFERENCE)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    model = arg or "cnn"
    if model not in REFERENCE:
        raise ValueError(f"configs/claim_mnist1d.py: argument must be one of "
                         f"{sorted(REFERENCE)}, got {arg!r}")
    config = load_config(f"{Path(__file__).with_name('mnist1d.py')}:{model}")
    config.unlock()
    config.name = f"claim: MNIST-1D {model}"
    config.num_seeds = 3
    config.log_every = 500
    config.techniques = ml_collections.ConfigDict(sort_keys=False)
    config.techniques.none = technique()
    if model != "logistic":
        config.techniques.batch = technique("batch")
        config.techniques.layer = technique("layer")
        config.techniques.group = technique("group", num_groups=5)
        config.techniques.weight = technique("weight")
    return config


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
        ax.set_title(f"{model}: test accuracy, median, IQR, seeds", fontsize=9)
    part = study.parts[models[-1]]
    for i, tech in enumerate(t for t in NORMS if t in part.config.techniques):
        steps, acc = part.curves(tech, "test/accuracy")
        fig.curve(axes[-1], steps, 100 * acc, label=NORMS[tech], c=fig.color(i))
    axes[-1].set(xlabel="step", ylabel="test accuracy (%)",
                 title=f"{models[-1]}: test accuracy (" + fig.BAND + ")")
    axes[-1].legend(fontsize=7)
    return fig.save(f, study.figure("mnist1d"))


def analyze(study: Study) -> Section:
    rows, checks, notes = [], [], []
    for model, part in study.parts.items():
        techs = [t for t in NORMS if t in part.config.techniques]
        for tech in techs:
            train = part.final(tech, "train/accuracy")
            rows.append([model, NORMS[tech], metrics.spread(100 * _acc(study, model, tech))
                         .format(".1f"), metrics.spread(100 * train).format(".1f"),
                         f"{100 * REFERENCE[model]:.0f}" if tech == "none" else ""])
        checks.append(metrics.check_near(f"{model} without normalization, test accuracy %",
                                         100 * _acc(study, model, "none"),
                                         100 * REFERENCE[model], tolerance=100 * TOLERANCE,
                                         fmt=".1f"))
        better = [NORMS[t] for t in techs[1:] if metrics.compare(
            _acc(study, model, t), _acc(study, model, "none"), better="higher").winner == "a"]
        worse = [NORMS[t] for t in techs[1:] if metrics.compare(
            _acc(study, model, t), _acc(study, model, "none"), better="higher").winner == "b"]
        if len(techs) > 1:
            notes.append(f"{model}: clearly better than no norm: {', '.join(better) or 'none'}; "
                         f"clearly worse: {', '.join(worse) or 'none'}.  ")
    c = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"MNIST-1D ({c.dataset.options.num_samples} samples, seed {c.dataset.seed}), Adam lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds; logistic, MLP 2x100, CNN 3x25 channels (stride 2).",
         "The verdict is about reproducing the paper's numbers; each norm is compared with no "
         "norm by the report's usual criterion (medians, difference beyond the larger IQR)."),
        [("Final test accuracy per model and norm (dashed: the paper), and the test accuracy "
          "of the CNN over training.", _figure(study))],
        markdown_table(["model", "norm", "test accuracy %", "train accuracy %", "paper %"],
                       rows),
        checks, notes,
        criterion=(f"the median test accuracy without normalization reproduces the paper if "
                   f"within {100 * TOLERANCE:.0f} points of it, and contradicts it if farther "
                   f"than that plus the IQR over seeds"))

"""Study 'bn_regularizer': BatchNorm regularizes and makes dropout less necessary.

Its runs are the configs of `configs/claim_bn_regularizer.py` (the setup is described there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_bn_regularizer import BATCH_SIZES, DROPOUT, STEPS_AT_100, parse_part
from experiments.studies import decision, metrics
from experiments.studies import figures as fig
from experiments.studies.base import Part, Section, Study, markdown_table

TITLE = "BatchNorm as a regularizer: less need for dropout"
CLAIM = ("Batch Normalization regularizes the model, so that in a batch-normalized network "
         "dropout can be reduced or removed (Ioffe & Szegedy 2015, Sec. 3.4 and 4.2.1); the "
         "regularization comes from the noise of the batch statistics, larger at small "
         "batches.")
LABELS = {"none": "no norm", "batch": "BatchNorm"}
TINY_TECHNIQUES = {"*": ("batch",)}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return tuple(f"b{b}" for b in BATCH_SIZES)


def _cell(part: Part, tech: str, rate: float) -> str:
    return next(c for c in part.cells(tech) if part.hparam(c, "dropout") == rate)


def _acc(part: Part, tech: str, rate: float, split: str = "test") -> np.ndarray:
    return 100 * part.final(_cell(part, tech, rate), f"{split}/accuracy", failed=0.1)


def _gap(part: Part, tech: str, rate: float) -> np.ndarray:
    return metrics.generalization_gap(_acc(part, tech, rate, "train"), _acc(part, tech, rate))


def _figure(study: Study) -> Path:
    f, axes = fig.panels(2)
    groups = [(b, t, r) for b in BATCH_SIZES for t in study.labels(LABELS) for r in DROPOUT]
    names = [f"b{b} {LABELS[t]}{' +drop' if r else ''}" for b, t, r in groups]
    fig.bars(axes[0], names, [_acc(study.parts[f"b{b}"], t, r) for b, t, r in groups],
             ylabel="test accuracy (%)")
    fig.bars(axes[1], names, [_gap(study.parts[f"b{b}"], t, r) for b, t, r in groups],
             ylabel="train - test accuracy (points)")
    return fig.save(f, study.figure("regularizer"))


def analyze(study: Study) -> Section:
    rate = DROPOUT[-1]
    rows, checks = [], []
    labels = study.labels(LABELS)
    for part_name, part in study.parts.items():
        batch = parse_part(part_name)
        for tech in labels:
            for r in DROPOUT:
                rows.append([str(batch), LABELS[tech], f"{r:g}",
                             decision.spread(_acc(part, tech, r)).format(".2f"),
                             decision.spread(_gap(part, tech, r)).format(".2f")])
        if study.tiny:
            continue
        gain = {t: _acc(part, t, rate) - _acc(part, t, 0.0) for t in LABELS}
        checks += [
            decision.check(f"batch {batch}: train-test gap without dropout (points)",
                           decision.compare(_gap(part, "batch", 0.0), _gap(part, "none", 0.0),
                                            better="lower"),
                           expect="a", labels=("BN", "no norm"), fmt=".2f"),
            decision.check(f"batch {batch}: test accuracy gained by dropout {rate:g} (points)",
                           decision.compare(gain["batch"], gain["none"], better="lower"),
                           expect="a", labels=("BN", "no norm"), fmt=".2f")]
    c = next(iter(study.parts.values())).config
    return Section(
        TITLE, CLAIM,
        (f"MNIST-1D (1,200 train / 400 test), MLP {c.model.depth}x{c.model.width} ReLU, Adam "
         f"lr {c.optimizer.learning_rate:g}, batch {' and '.join(map(str, BATCH_SIZES))} for "
         f"the same epochs ({STEPS_AT_100} steps at batch 100), {c.num_seeds} seeds; dropout "
         f"{', '.join(f'{r:g}' for r in DROPOUT)} after each hidden block.",
         "Gap = accuracy on the whole training split minus test accuracy (eval mode, points); "
         "'gained by dropout' = test accuracy with dropout minus without, per seed. The claim "
         "predicts a smaller gap with BN and a smaller gain from dropout with BN."),
        [("(a) Test accuracy and (b) train-test gap, by batch size, normalization and "
          "dropout.", _figure(study))],
        markdown_table(["batch", "norm", "dropout", "test accuracy %", "gap (points)"], rows),
        checks)

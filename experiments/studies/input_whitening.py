"""Study 'input_whitening': whitened inputs make training converge faster.

Its runs are the configs of `configs/claim_input_whitening.py` (the setup is described there).
"""

from __future__ import annotations

from pathlib import Path

from configs.claim_input_whitening import EPSILON, INPUTS, LEARNING_RATES
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "Whitened inputs speed up training"
CLAIM = ("Training converges faster when the inputs are whitened, i.e. linearly transformed "
         "to zero means, unit variances and no correlations (LeCun et al. 1998, 'Efficient "
         "BackProp', Sec. 4.3; the motivation of Ioffe & Szegedy 2015, Sec. 2, for "
         "normalizing every layer's inputs).")
TARGET = 0.1
LABELS = {"none": "no norm", "batch": "BatchNorm"}
TINY_TECHNIQUES = {"*": ("none",)}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return tuple(INPUTS)


def _figure(study: Study) -> Path:
    labels = study.labels(LABELS)
    f, axes = fig.panels(len(labels))
    for ax, tech in zip(axes, labels, strict=True):
        for i, inputs in enumerate(INPUTS):
            part = study.parts[inputs]
            cell, _ = part.fastest(tech, TARGET)
            steps, values = part.curves(cell, "train/loss")
            fig.curve(ax, steps, values, c=fig.color(i),
                      label=f"{inputs} (lr {part.hparam(cell, 'learning_rate'):g})")
        ax.axhline(TARGET, color="gray", linestyle=":", label=f"target {TARGET:g}")
        fig.log_scale(ax, [TARGET])
        ax.set(xlabel="step", ylabel="training loss",
               title=f"{LABELS[tech]}, best rate per input ({fig.BAND})")
        ax.legend()
    return fig.save(f, study.figure("whitening"))


def analyze(study: Study) -> Section:
    best = {(i, t): study.parts[i].fastest(t, TARGET) for i in INPUTS for t in study.labels(LABELS)}
    rows = []
    for (inputs, t), (cell, steps_) in best.items():
        part = study.parts[inputs]
        rows.append([inputs, LABELS[t], f"{part.hparam(cell, 'learning_rate'):g}",
                     decision.spread(steps_).format(".0f"),
                     decision.spread(100 * part.final(cell, "test/accuracy")).format(".1f")])
    steps = {k: v[1] for k, v in best.items()}
    name = f"no norm: steps to training loss {TARGET:g} at each one's best rate"
    checks = [] if study.tiny else [
        decision.check(name, decision.compare(steps["whitened", "none"], steps[other, "none"],
                                              better="lower"),
                       expect="a", labels=("whitened", other), fmt=".0f")
        for other in ("standardized", "raw")]
    c = study.parts["raw"].config
    return Section(
        TITLE, CLAIM,
        (f"digits (8x8) raw, standardized and ZCA-whitened (eps {EPSILON:g}); MLP "
         f"{c.model.depth}x{c.model.width} ReLU without normalization and with BatchNorm; SGD "
         f"momentum 0.9, batch {c.batch_size}, {c.steps} steps, learning rates "
         f"{', '.join(f'{x:g}' for x in LEARNING_RATES)}, {c.num_seeds} seeds.",
         f"Steps until the training loss (eval mode, logged every {c.log_every} steps, "
         f"interpolated) first reaches {TARGET:g}, at each input's and model's best rate. "
         "BatchNorm is shown for comparison: it normalizes every layer's input, the first "
         "included."),
        [("Training loss at the best rate for each input version: (a) without "
          "normalization, (b) with BatchNorm.", _figure(study))],
        markdown_table(["inputs", "model", "best rate", f"steps to loss {TARGET:g}",
                        "test accuracy %"], rows),
        checks)

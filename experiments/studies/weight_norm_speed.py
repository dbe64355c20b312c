"""Study 'weight_norm_speed': WeightNorm speeds up training like BatchNorm, at a lower cost per
step.

Its runs are the config of `configs/claim_weight_norm_speed.py` (the setup is described there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_weight_norm_speed import LEARNING_RATES
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Part, Section, Study, markdown_table

TITLE = "WeightNorm vs BatchNorm: steps and seconds"
CLAIM = ("Weight normalization speeds up the convergence of SGD much as batch normalization "
         "does, while costing less per step, since it needs no statistics of the batch "
         "(Salimans & Kingma 2016, Sec. 1 and 2.1).")
TARGET = 0.2
LABELS = {"none": "no norm", "weight": "WeightNorm", "batch": "BatchNorm"}
TINY_TECHNIQUES = {"main": ("weight",)}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def _ms_per_step(part: Part, tech: str) -> np.ndarray:
    """Milliseconds per step of each timed chunk after the first (all runs of ``tech``
    train together: one value per chunk)."""
    rows = sorted((r for r in part.rows if r["technique"] == tech and r["seed"] == 0
                   and r["cell"] == part.cells(tech)[0]), key=lambda r: r["step"])
    return np.asarray([1000.0 / r["time/steps_per_s"] for r in rows[1:]])


def _figure(study: Study, part: Part, best: dict[str, str]) -> Path:
    f, (ax1, ax2) = fig.panels(2)
    for i, tech in enumerate(best):
        steps, values = part.curves(best[tech], "train/loss")
        fig.curve(ax1, steps, values, c=fig.color(i),
                  label=f"{LABELS[tech]} (lr {part.hparam(best[tech], 'learning_rate'):g})")
    ax1.axhline(TARGET, color="gray", linestyle=":", label=f"target {TARGET:g}")
    fig.log_scale(ax1, [TARGET])
    ax1.set(xlabel="step", ylabel="training loss",
            title=f"training loss at each one's best rate ({fig.BAND})")
    ax1.legend()
    fig.bars(ax2, [LABELS[t] for t in best], [_ms_per_step(part, t) for t in best],
             ylabel="ms per step (all runs)")
    return fig.save(f, study.figure("speed"))


def analyze(study: Study) -> Section:
    part = study.parts["main"]
    labels = study.labels(LABELS)
    best = {t: part.fastest(t, TARGET) for t in labels}
    ms = {t: _ms_per_step(part, t) for t in labels}
    rows = [[LABELS[t], f"{part.hparam(best[t][0], 'learning_rate'):g}",
             decision.spread(best[t][1]).format(".0f"), decision.spread(ms[t]).format(".2f"),
             decision.spread(best[t][1] * np.median(ms[t]) / 1000).format(".2f"),
             decision.spread(100 * part.final(best[t][0], "test/accuracy")).format(".1f")]
            for t in labels]
    steps = {t: best[t][1] for t in labels}
    checks = [] if study.tiny else [
        decision.check(f"steps to training loss {TARGET:g} at each one's best rate",
                       decision.compare(steps["weight"], steps["none"], better="lower"),
                       expect="a", labels=("WeightNorm", "no norm"), fmt=".0f"),
        decision.check(f"steps to training loss {TARGET:g} at each one's best rate",
                       decision.compare(steps["batch"], steps["none"], better="lower"),
                       expect="a", labels=("BatchNorm", "no norm"), fmt=".0f"),
        decision.check("ms per training step (chunks paired by position)",
                       decision.compare(ms["weight"], ms["batch"], better="lower"),
                       expect="a", labels=("WeightNorm", "BatchNorm"), fmt=".2f")]
    c = part.config
    return Section(
        TITLE, CLAIM,
        (f"real MNIST digits (3,200 train), MLP {c.model.depth}x{c.model.width} ReLU, SGD "
         f"momentum 0.9, batch {c.batch_size}, {c.steps} steps, learning rates "
         f"{', '.join(f'{x:g}' for x in LEARNING_RATES)}, {c.num_seeds} seeds; "
         f"{c.num_seeds * len(LEARNING_RATES)} runs per technique in one compiled program.",
         f"Steps until the training loss (1,000 training images, eval mode, logged every "
         f"{c.log_every} steps, interpolated) first reaches {TARGET:g}, at each technique's "
         "best rate; time per step of each later chunk (the first, which may include "
         "compilation, is left out); seconds to target = steps x median time per step "
         "(shared by the runs of a technique, so per-seed only through the steps). The times "
         "are taken inside the regeneration, which runs two studies at once (`--jobs 2`), so "
         "the other job's load is part of them; `benchmarks/` has clean timings."),
        [("(a) Training loss at each technique's best rate. (b) Time per training step.",
          _figure(study, part, {t: best[t][0] for t in labels}))],
        markdown_table(["technique", "best rate", f"steps to loss {TARGET:g}", "ms per step",
                        "seconds to target", "test accuracy %"], rows),
        checks)

"""Study 'layer_norm_sequences': LayerNorm suits recurrent networks and small batches.

Its runs are the configs of `configs/claim_layer_norm_sequences.py` (the setup is described
there; the model is `examples/gru.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_layer_norm_sequences import BATCH_SIZES, EPOCHS, parse_part
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "LayerNorm for sequences: a GRU over batch sizes"
CLAIM = ("Layer normalization, computed per example and per time step, suits recurrent "
         "networks and small batches, where batch normalization's statistics (over the batch "
         "and the time steps) are poor; it also trains recurrent networks faster than no "
         "normalization (Ba, Kiros & Hinton 2016, Sec. 1, 3.1 and 6.2).")
LABELS = {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm"}
TINY_TECHNIQUES = {"*": ("layer",)}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return tuple(f"b{b}" for b in BATCH_SIZES)


def _acc(study: Study, batch: int, tech: str) -> np.ndarray:
    """Per-seed final test accuracy in %; a diverged run counts as chance (10%)."""
    return 100 * study.parts[f"b{batch}"].final(tech, "test/accuracy", failed=0.1)


def _figure(study: Study, sizes: list[int]) -> Path:
    f, (ax1, ax2) = fig.panels(2)
    for i, tech in enumerate(study.labels(LABELS)):
        fig.sweep(ax1, sizes, np.stack([_acc(study, b, tech) for b in sizes]),
                  label=LABELS[tech], c=fig.color(i), logx=False)
        part = study.parts[f"b{sizes[-1]}"]
        steps, values = part.curves(tech, "train/loss")
        fig.curve(ax2, steps, values, label=LABELS[tech], c=fig.color(i))
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(sizes, [str(b) for b in sizes])
    ax1.set(xlabel=f"batch size ({EPOCHS} epochs each)", ylabel="test accuracy (%)",
            title=f"GRU on MNIST-1D ({fig.BAND})")
    ax2.set(xlabel="step", ylabel="training loss",
            title=f"training loss at batch {sizes[-1]}")
    for ax in (ax1, ax2):
        ax.legend()
    return fig.save(f, study.figure("sequences"))


def analyze(study: Study) -> Section:
    sizes = sorted(parse_part(p) for p in study.parts)
    small, large = sizes[0], sizes[-1]
    labels = study.labels(LABELS)
    rows = [[str(b), str(study.parts[f"b{b}"].config.steps),
             *[decision.spread(_acc(study, b, t)).format(".1f") for t in labels]] for b in sizes]
    drop = {t: _acc(study, large, t) - _acc(study, small, t) for t in labels}
    rows.append([f"drop {large} -> {small}", "",
                 *[decision.spread(drop[t]).format("+.1f") for t in labels]])
    checks = [] if study.tiny else [
        decision.check(f"test accuracy % at batch {small}",
                       decision.compare(_acc(study, small, "layer"), _acc(study, small, "batch"),
                                        better="higher"),
                       expect="a", labels=("LayerNorm", "BatchNorm"), fmt=".1f"),
        decision.check(f"accuracy lost from batch {large} to {small} (points)",
                       decision.compare(drop["layer"], drop["batch"], better="lower"),
                       expect="a", labels=("LayerNorm", "BatchNorm"), fmt=".1f"),
        decision.check(f"test accuracy % at batch {large}",
                       decision.compare(_acc(study, large, "layer"), _acc(study, large, "none"),
                                        better="higher"),
                       expect="a", labels=("LayerNorm", "no norm"), fmt=".1f")]
    c = study.parts[f"b{large}"].config
    return Section(
        TITLE, CLAIM,
        (f"MNIST-1D as 40 time steps of one value; GRU of {c.model.options.width} units "
         f"(examples/gru.py: dense -> norm -> relu per step, GRU -> norm, last step -> head); "
         f"Adam lr {c.optimizer.learning_rate:g}; batch {', '.join(map(str, sizes))}, "
         f"{EPOCHS} epochs each; {c.num_seeds} seeds.",
         "BatchNorm pools the batch and the time steps (one mean and variance per feature; "
         "running averages in eval mode); LayerNorm normalizes each time step of each "
         "sequence over its features."),
        [("(a) Test accuracy against the batch size; (b) training loss at the largest "
          "batch.", _figure(study, sizes))],
        markdown_table(["batch", "steps", *[f"test accuracy %, {v}" for v in labels.values()]],
                       rows),
        checks)

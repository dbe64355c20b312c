"""Study 'covariate_shift': Internal covariate shift with and without BatchNorm.

Its runs are the configs of `configs/claim_covariate_shift.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from experiments.data import Dataset
from experiments.hooks import Hook
from experiments.probes import ProbeHook, input_quantile_probe
from experiments.studies import decision, metrics
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "Internal covariate shift with and without BatchNorm"
CLAIM = ("BatchNorm reduces internal covariate shift: the distribution of a layer's inputs "
         "changes less during training (Ioffe & Szegedy 2015, Figure 1b-c: percentiles of a "
         "sigmoid's input drift without BN and stay put with it).")
LABELS = {"none": "no norm", "batch": "BatchNorm"}
QUANTILES = ("15%", "50%", "85%")


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def prepare(part: str, config: ml_collections.ConfigDict, ds: Dataset,
            workdir: Path) -> Hook:
    hook = ProbeHook(config, ds, workdir, input_quantile_probe(num_examples=512, num_units=16))
    return hook


def _layers(study: Study) -> list[str]:
    keys = {k for r in study.parts["main"].probes for k in r}
    return [k.split("/", 1)[1] for k in metrics.layer_keys(sorted(keys), "input_q/")]


def _shift(study: Study, tech: str, layer: str) -> np.ndarray:
    """Per-seed path length of the three percentiles, mean over the probed units."""
    _, q = study.parts["main"].probe_array(tech, f"input_q/{layer}")  # (seeds, T, units, 3)
    return np.asarray([np.mean([metrics.path_length(q[s, :, u]) for u in range(q.shape[2])])
                       for s in range(q.shape[0])])


def _figure(study: Study, layers: list[str], shift: dict) -> Path:
    f, axes = fig.panels(3, width=4.6)
    last = layers[-1]
    for ax, tech in zip(axes, LABELS, strict=False):
        steps, q = study.parts["main"].probe_array(tech, f"input_q/{last}")
        for k, name in enumerate(QUANTILES):
            fig.curve(ax, steps, q[:, :, 0, k], label=f"{name} percentile", c=fig.color(k))
        ax.set(xlabel="step", ylabel="input of the sigmoid",
               title=f"{LABELS[tech]}: unit 0 of {last}")
        ax.legend()
    x = np.arange(len(layers))
    for i, tech in enumerate(LABELS):
        fig.curve(axes[2], x, np.stack([shift[tech, layer] for layer in layers], axis=1),
                  label=LABELS[tech], c=fig.color(i))
    axes[2].set_xticks(x, layers)
    axes[2].set(xlabel="hidden layer", ylabel="percentile path length",
                title="shift over training (" + fig.BAND + ")")
    axes[2].legend()
    return fig.save(f, study.figure("covariate_shift"))


def analyze(study: Study) -> Section:
    layers = _layers(study)
    shift = {(t, layer): _shift(study, t, layer) for t in LABELS for layer in layers}
    rows = [[layer, *[decision.spread(shift[t, layer]).format(".2f") for t in LABELS]]
            for layer in layers]
    acc = {t: study.parts["main"].final(t, "test/accuracy") for t in LABELS}
    rows.append(["final test accuracy", *[decision.spread(acc[t]).format(".3f")
                                          for t in LABELS]])
    checks = [decision.check(f"{layer}: percentile path length",
                            decision.compare(shift["batch", layer], shift["none", layer],
                                            better="lower"),
                            expect="a", labels=("BN", "no norm"), fmt=".2f")
              for layer in layers]
    c = study.parts["main"].config
    return Section(
        TITLE, CLAIM,
        (f"digits, MLP {c.model.depth}x{c.model.width} sigmoid, SGD momentum 0.9, lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds.",
         f"15/50/85th percentiles of each sigmoid's input on 512 fixed training examples every "
         f"{c.log_every} steps; shift = sum over probes of the mean |change| of the three "
         f"percentiles, averaged over 16 units."),
        [("Percentiles of one unit's sigmoid input over training (left: no norm, middle: "
          "BatchNorm) and the shift per layer (right).", _figure(study, layers, shift))],
        markdown_table(["layer", "shift, no norm", "shift, BN"], rows),
        checks)

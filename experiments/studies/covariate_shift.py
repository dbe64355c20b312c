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
         "sigmoid's input drift without BN and stay put with it). Santurkar et al. (2018, "
         "Sec. 2) measure the same on the input of the next layer and find BN's reduction "
         "small or absent.")
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


def _shift(study: Study, tech: str, layer: str, where: str = "output_q") -> np.ndarray:
    """Per-seed path length of the three percentiles, mean over the probed units, of the
    layer's output (``output_q``, the next layer's input) or its sigmoid's input
    (``input_q``, BN's output where there is BN)."""
    _, q = study.parts["main"].probe_array(tech, f"{where}/{layer}")  # (seeds, T, units, 3)
    return np.asarray([np.mean([metrics.path_length(q[s, :, u]) for u in range(q.shape[2])])
                       for s in range(q.shape[0])])


def _figure(study: Study, layers: list[str], shift: dict) -> Path:
    f, axes = fig.panels(3, width=4.6)
    last = layers[-1]
    for ax, tech in zip(axes, LABELS, strict=False):
        steps, q = study.parts["main"].probe_array(tech, f"output_q/{last}")
        for k, name in enumerate(QUANTILES):
            fig.curve(ax, steps, q[:, :, 0, k], label=f"{name} percentile", c=fig.color(k))
        ax.set(xlabel="step", ylabel="layer output (next layer's input)",
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
    inner = {(t, layer): _shift(study, t, layer, "input_q") for t in LABELS for layer in layers}
    rows = [[layer, *[decision.spread(shift[t, layer]).format(".2f") for t in LABELS],
             *[decision.spread(inner[t, layer]).format(".2f") for t in LABELS]]
            for layer in layers]
    acc = {t: study.parts["main"].final(t, "test/accuracy") for t in LABELS}
    rows.append(["final test accuracy", *[decision.spread(acc[t]).format(".3f")
                                          for t in LABELS], "", ""])
    checks = [decision.check(f"{layer}: path length of the output's percentiles",
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
         f"15/50/85th percentiles of each hidden layer's output (its sigmoid's output, the "
         f"next layer's input) on 512 fixed training examples every {c.log_every} steps; "
         f"shift = sum over probes of the mean |change| of the three percentiles, averaged "
         f"over 16 units. The verdict uses this; the sigmoid's input (BN's output, normalized "
         f"by construction, the BN paper's Figure 1 measure) is shown for reference."),
        [("Percentiles of one unit's output over training ((a) no norm, (b) BatchNorm) and "
          "(c) the shift per layer.", _figure(study, layers, shift))],
        markdown_table(["layer", "output shift, no norm", "output shift, BN",
                        "sigmoid-input shift, no norm", "sigmoid-input shift, BN"], rows),
        checks)

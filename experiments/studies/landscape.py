"""Study 'landscape': Loss-landscape smoothness with and without BatchNorm.

Its runs are the configs of `configs/claim_landscape.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from experiments.data import Dataset
from experiments.hooks import Hook
from experiments.probes import ProbeHook, landscape_probe
from experiments.studies import decision, metrics
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "Loss-landscape smoothness with and without BatchNorm"
CLAIM = ("BatchNorm makes the loss landscape smoother: along the gradient direction the loss "
         "varies less, the gradient changes less and the effective beta-smoothness is lower "
         "(Santurkar et al. 2018, \"How does batch normalization help optimization?\", "
         "Figure 4).")
FACTORS = (0.5, 1.0, 2.0, 4.0)
LABELS = {"none": "no norm", "batch": "BatchNorm"}
MEASURES = {"loss_range": "loss range", "grad_change": "gradient change",
            "beta": "effective beta-smoothness"}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def prepare(part: str, config: ml_collections.ConfigDict, ds: Dataset,
            workdir: Path) -> Hook:
    hook = ProbeHook(config, ds, workdir, landscape_probe(FACTORS))
    return hook


def _measures(study: Study, tech: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Probe steps and each measure per seed and step, (seeds, steps)."""
    part = study.parts["main"]
    steps, eta = part.probe_array(tech, "landscape/eta")
    _, loss = part.probe_array(tech, "landscape/loss")
    _, change = part.probe_array(tech, "landscape/grad_change")
    _, norm = part.probe_array(tech, "landscape/grad_norm")
    out = {k: np.zeros(norm.shape) for k in MEASURES}
    for s in range(norm.shape[0]):
        for t in range(norm.shape[1]):
            summary = metrics.landscape_summary(eta[s, t], loss[s, t], change[s, t],
                                                float(norm[s, t]))
            for k in MEASURES:
                out[k][s, t] = summary[k]
    return steps, out


def _figure(study: Study, measures: dict) -> Path:
    f, axes = fig.panels(len(MEASURES), width=4.6)
    for ax, (key, name) in zip(axes, MEASURES.items(), strict=True):
        for i, tech in enumerate(LABELS):
            steps, m = measures[tech]
            fig.curve(ax, steps, m[key], label=LABELS[tech], c=fig.color(i))
        fig.log_scale(ax, np.concatenate([measures[t][1][key].ravel() for t in LABELS]))
        ax.set(xlabel="step", ylabel=name, title=f"{name} (" + fig.BAND + ")")
        ax.legend()
    return fig.save(f, study.figure("landscape"))


def _phase(measures: dict, tech: str, key: str, phase: str) -> np.ndarray:
    """Per seed: the value at step 0 (``init``) or the median over the steps after it
    (``training``)."""
    steps, m = measures[tech]
    values = m[key][:, steps == 0] if phase == "init" else m[key][:, steps > 0]
    return np.nanmedian(values, axis=1)


def analyze(study: Study) -> Section:
    measures = {t: _measures(study, t) for t in LABELS}
    phases = {"init": "at initialization", "training": "median over training"}
    per_seed = {(t, k, p): _phase(measures, t, k, p) for t in LABELS for k in MEASURES
                for p in phases}
    acc = {t: study.parts["main"].final(t, "test/accuracy") for t in LABELS}
    rows = [[name, phases[p], *[decision.spread(per_seed[t, k, p]).format(".3g")
                                for t in LABELS]]
            for k, name in MEASURES.items() for p in phases]
    rows.append(["final test accuracy", "", *[decision.spread(acc[t]).format(".3f")
                                              for t in LABELS]])
    checks = [decision.check(f"{name} ({phases['training']})",
                             decision.compare(per_seed["batch", k, "training"],
                                              per_seed["none", k, "training"], better="lower"),
                             expect="a", labels=("BN", "no norm"))
              for k, name in MEASURES.items()]
    notes = []
    for k, name in MEASURES.items():  # not part of the claim, but the picture differs there
        c = decision.compare(per_seed["batch", k, "init"], per_seed["none", k, "init"],
                             better="lower")
        word = {"a": "BN smoother", "b": "BN rougher", "tie": "no difference detected"}
        notes.append(f"- At initialization, {name}: {word[c.winner]}; BN minus no norm, "
                     f"{c.format()}.")
    c = study.parts["main"].config
    return Section(
        TITLE, CLAIM,
        (f"digits, MLP {c.model.depth}x{c.model.width} ReLU, plain SGD lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds.",
         f"Every {c.log_every} steps on one fixed training batch: along theta - eta g with eta "
         f"= {', '.join(f'{x:g}' for x in FACTORS)} x lr; per seed the value at step 0 and "
         f"the median over the later probes; the verdict is about training, the step-0 "
         f"comparison is reported below the table."),
        [("Loss range, gradient change and effective beta-smoothness along the gradient "
          "over training.", _figure(study, measures))],
        markdown_table(["measure", "when", "no norm", "BN"], rows),
        checks, notes)

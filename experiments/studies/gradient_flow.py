"""Study 'gradient_flow': Gradient flow through deep networks with and without BatchNorm.

Its runs are the configs of `configs/claim_gradient_flow.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from configs.claim_gradient_flow import ACTIVATIONS
from experiments.data import Dataset
from experiments.hooks import Hook
from experiments.probes import ProbeHook, grad_norm_probe
from experiments.studies import decision, metrics
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "Gradient flow through deep networks with and without BatchNorm"
CLAIM = ("BatchNorm's rescaling by 1/sigma keeps back-propagated gradients from vanishing or "
         "exploding in deep networks (Ioffe & Szegedy 2015, Sec. 3.3). Yang et al. 2019 (\"A "
         "mean field theory of batch normalization\") prove the opposite at initialization: "
         "in deep BN networks the gradients explode towards the input.")
LABELS = {"none": "no norm", "batch": "BatchNorm"}
HEALTHY = 1.0  # |log10 ratio| below this: within a factor of 10 across depth


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("tanh",) if tiny else ACTIVATIONS


def prepare(part: str, config: ml_collections.ConfigDict, ds: Dataset,
            workdir: Path) -> Hook:
    hook = ProbeHook(config, ds, workdir, grad_norm_probe(), every=10**9)  # init + end
    return hook


def _profiles(study: Study, act: str, tech: str) -> dict[str, np.ndarray]:
    """Per-seed gradient-norm profiles (seeds, layers) at init and at the last step."""
    part = study.parts[act]
    keys = metrics.layer_keys([k for r in part.probes for k in r], "grad_norm/")
    out = {}
    for when, pick in (("init", 0), ("end", -1)):
        per_layer = []
        for key in keys:
            _, values = part.curves(tech, key, probes=True)
            per_layer.append(values[:, pick])
        out[when] = np.stack(per_layer, axis=1)
    return out


def _ratios(profiles: np.ndarray) -> np.ndarray:
    return np.asarray([metrics.log_depth_ratio(p) for p in profiles])


def _figure(study: Study, profiles: dict) -> Path:
    acts = list(study.parts)
    f, axes = fig.panels(len(acts), rows=2, width=4.5, height=3.4)
    for col, act in enumerate(acts):
        for row, when in enumerate(("init", "end")):
            ax = axes[row * len(acts) + col]
            for i, tech in enumerate(LABELS):
                fig.profile(ax, profiles[act, tech][when], label=LABELS[tech], c=fig.color(i))
            ax.set(xlabel="layer (0 = input side)", ylabel="gradient norm ||dL/dW||",
                   title=f"{act}, {'initialization' if when == 'init' else 'after training'}")
            ax.legend()
    return fig.save(f, study.figure("gradient_flow"))


def analyze(study: Study) -> Section:
    profiles = {(a, t): _profiles(study, a, t) for a in study.parts for t in LABELS}
    rows, checks, explode = [], [], []
    for act in study.parts:
        acc = {t: study.parts[act].final(t, "test/accuracy") for t in LABELS}
        for when in ("init", "end"):
            r = {t: _ratios(profiles[act, t][when]) for t in LABELS}
            rows.append([act, when, *[decision.spread(r[t]).format(".2f") for t in LABELS],
                         *([decision.spread(acc[t]).format(".3f") for t in LABELS]
                           if when == "end" else ["", ""])])
            checks.append(decision.check(
                f"{act} at {when}: |log10(first/last gradient norm)|",
                decision.compare(np.abs(r["batch"]), np.abs(r["none"]), better="lower"),
                expect="a", labels=("BN", "no norm"), fmt=".2f"))
            if when == "init" and decision.spread(r["batch"]).median > HEALTHY:
                explode.append(act)
    notes = [f"With BatchNorm the gradient norm at initialization grows more than "
             f"{10 ** HEALTHY:g}x from the last to the first layer for "
             f"{', '.join(explode)}: gradient explosion at initialization, as Yang et al. 2019 "
             f"predict for deep BN networks."] if explode else []
    c = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"digits, MLP {c.model.depth}x{c.model.width} (He-normal for ReLU, LeCun-normal for "
         f"sigmoid and tanh), sigmoid / tanh / ReLU, "
         f"SGD momentum 0.9, lr {c.optimizer.learning_rate:g}, batch {c.batch_size}, "
         f"{c.steps} steps, {c.num_seeds} seeds.",
         "Per-layer gradient norms on one training batch (train mode) at initialization and "
         "at the end; ratio = log10(first layer / last hidden layer), 0 = perfectly flat."),
        [("Gradient norm per layer, at initialization (top) and after training (bottom); "
          "mean over seeds with its 95% confidence band.",
          _figure(study, profiles))],
        markdown_table(["activation", "when", "log10 ratio, no norm", "log10 ratio, BN",
                        "test acc., no norm", "test acc., BN"], rows),
        checks, notes)

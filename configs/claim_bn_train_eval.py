"""Claim: BatchNorm's eval mode can disagree with its train mode; Precise BN fixes the EMA part.

    python -m experiments.studies --only bn_train_eval
    python -m experiments --config configs/claim_bn_train_eval.py --workdir runs/bn_train_eval

Digits, MLP 3x64 ReLU with BatchNorm, SGD momentum 0.9, lr 0.1, batch 32, 600 steps, 5 seeds,
EMA decay (flax ``momentum``, the weight on the old value) 0.9, 0.99 and 0.999.  Every
``log_every`` steps the test accuracy is measured three ways: eval mode with the EMA
(``test/accuracy``), train mode with each test batch's own statistics
(``test_batch_stats/accuracy``), and eval mode with Precise BN statistics recomputed exactly
over 20 training batches (:func:`experiments.probes.precise_bn_probe`).
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from experiments import metrics
from experiments import study_figures as fig
from experiments.config import base_config, technique
from experiments.data import Dataset
from experiments.hooks import Hook
from experiments.probes import ProbeHook, precise_bn_probe
from experiments.studies import Section, Study, markdown_table

TITLE = "Train/eval discrepancy of BatchNorm: EMA decay, steps and Precise BN"
CLAIM = ("The running averages that BatchNorm uses in eval mode lag behind the weights: with "
         "a slow EMA (decay close to 1) or few steps, eval mode is worse than the true "
         "population statistics, and recomputing them exactly (Precise BN) recovers the gap "
         "(Wu & Johnson 2021, \"Rethinking 'Batch' in BatchNorm\", Sec. 3).")
DECAYS = (0.9, 0.99, 0.999)
EARLY = 100  # the "few steps" point


def _label(decay: float) -> str:
    return f"bn_{decay:g}".replace("0.", "")


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "claim: BN train/eval discrepancy"
    config.dataset.name = "digits"
    config.model.update(kind="mlp", depth=3, width=64, activation="relu")
    config.optimizer.update(name="momentum", learning_rate=0.1, momentum=0.9)
    config.steps, config.log_every, config.batch_size = 600, 20, 32
    config.num_seeds = 5
    for decay in DECAYS:
        config.techniques[_label(decay)] = technique("batch", momentum=decay)
    return config


def prepare(part: str, config: ml_collections.ConfigDict, ds: Dataset,
            workdir: Path) -> Hook:
    return ProbeHook(config, ds, workdir, precise_bn_probe(num_batches=20))


def _curves(study: Study, label: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    part = study.parts["main"]
    return {"EMA (eval mode)": part.curves(label, "test/accuracy"),
            "batch statistics (train mode)": part.curves(label, "test_batch_stats/accuracy"),
            "Precise BN": part.curves(label, "precise/test_accuracy", probes=True)}


def _at(curve: tuple[np.ndarray, np.ndarray], step: int) -> np.ndarray:
    """Per-seed values at the first logged step >= ``step`` (the last one if none)."""
    steps, values = curve
    return values[:, min(int(np.searchsorted(steps, step)), len(steps) - 1)]


def _figure(study: Study) -> Path:
    f, axes = fig.panels(len(DECAYS) + 1, width=4.2)
    for ax, decay in zip(axes, DECAYS, strict=False):
        for i, (name, (steps, values)) in enumerate(_curves(study, _label(decay)).items()):
            fig.curve(ax, steps, values, label=name, c=fig.color(i))
        ax.set(xlabel="step", ylabel="test accuracy", title=f"EMA decay {decay:g}")
        ax.legend(fontsize=7)
    for i, decay in enumerate(DECAYS):
        curves = _curves(study, _label(decay))
        steps, precise = curves["Precise BN"]
        ema = _at_steps(curves["EMA (eval mode)"], steps)
        fig.curve(axes[-1], steps, 100 * (precise - ema), label=f"decay {decay:g}",
                  c=fig.color(i))
    axes[-1].set(xlabel="step", ylabel="Precise BN - EMA (accuracy points)",
                 title="eval-mode gap (" + fig.BAND + ")")
    axes[-1].legend(fontsize=7)
    return fig.save(f, study.figure("train_eval"))


def _at_steps(curve: tuple[np.ndarray, np.ndarray], steps: np.ndarray) -> np.ndarray:
    return np.stack([_at(curve, int(s)) for s in steps], axis=1)


def analyze(study: Study) -> Section:
    final = study.parts["main"].config.steps
    early = min(EARLY, final)
    rows, gaps = [], {}
    for decay in DECAYS:
        curves = _curves(study, _label(decay))
        for step in (early, final):
            ema, batch, precise = (_at(c, step) for c in curves.values())
            gaps[decay, step] = 100 * (precise - ema)
            rows.append([f"{decay:g}", str(step), *[metrics.spread(v).format(".3f")
                                                    for v in (ema, batch, precise)],
                         metrics.spread(gaps[decay, step]).format(".1f")])
    slow, fast = DECAYS[-1], DECAYS[0]
    checks = [
        metrics.check(f"Precise BN - EMA accuracy (points) at step {early}",
                      metrics.compare(gaps[slow, early], gaps[fast, early], better="higher"),
                      expect="a", labels=(f"decay {slow:g}", f"decay {fast:g}"), fmt=".1f"),
        metrics.check(f"gap at decay {DECAYS[1]:g} (points)",
                      metrics.compare(gaps[DECAYS[1], early], gaps[DECAYS[1], final],
                                      better="higher"),
                      expect="a", labels=(f"step {early}", f"step {final}"), fmt=".1f"),
        metrics.check(f"test accuracy at decay {slow:g}, step {final}",
                      metrics.compare(_at(_curves(study, _label(slow))["Precise BN"], final),
                                      _at(_curves(study, _label(slow))["EMA (eval mode)"], final),
                                      better="higher"),
                      expect="a", labels=("Precise BN", "EMA"))]
    c = study.parts["main"].config
    return Section(
        TITLE, CLAIM,
        (f"digits, MLP {c.model.depth}x{c.model.width} ReLU + BatchNorm, SGD momentum 0.9, lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds; EMA decay {', '.join(f'{d:g}' for d in DECAYS)}.",
         "Test accuracy in eval mode with the EMA, in train mode with each test batch's "
         f"statistics (batches of {c.batch_size}), and with Precise BN (exact statistics of "
         "20 training batches) every 20 steps. The EMA never feeds back into training, so the "
         "runs differ only in eval mode: the other two columns repeat across decays."),
        [("Test accuracy by evaluation mode over training, per EMA decay; right: Precise BN "
          "minus EMA accuracy.", _figure(study))],
        markdown_table(["EMA decay", "step", "EMA (eval)", "batch stats (train mode)",
                        "Precise BN", "Precise - EMA (points)"], rows),
        checks)

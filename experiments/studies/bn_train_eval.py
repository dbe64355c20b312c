"""Study 'bn_train_eval': Train/eval discrepancy of BatchNorm: EMA decay, steps and Precise BN.

Its runs are the configs of `configs/claim_bn_train_eval.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from configs.claim_bn_train_eval import DECAYS, decay_label
from experiments.data import Dataset
from experiments.hooks import Hook
from experiments.probes import ProbeHook, precise_bn_probe
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "Train/eval discrepancy of BatchNorm: EMA decay, steps and Precise BN"
CLAIM = ("The running averages that BatchNorm uses in eval mode lag behind the weights: with "
         "a slow EMA (decay close to 1) or few steps, eval mode is worse than the true "
         "population statistics, and recomputing them exactly (Precise BN) recovers the gap "
         "(Wu & Johnson 2021, \"Rethinking 'Batch' in BatchNorm\", Sec. 3).")
EARLY = 100  # the "few steps" point


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


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
        for i, (name, (steps, values)) in enumerate(_curves(study, decay_label(decay)).items()):
            fig.curve(ax, steps, values, label=name, c=fig.color(i))
        ax.set(xlabel="step", ylabel="test accuracy", title=f"EMA decay {decay:g}")
        ax.legend()
    for i, decay in enumerate(DECAYS):
        curves = _curves(study, decay_label(decay))
        steps, precise = curves["Precise BN"]
        ema = _at_steps(curves["EMA (eval mode)"], steps)
        fig.curve(axes[-1], steps, 100 * (precise - ema), label=f"decay {decay:g}",
                  c=fig.color(i))
    axes[-1].set(xlabel="step", ylabel="Precise BN - EMA (accuracy points)",
                 title="eval-mode gap (" + fig.BAND + ")")
    axes[-1].legend()
    return fig.save(f, study.figure("train_eval"))


def _at_steps(curve: tuple[np.ndarray, np.ndarray], steps: np.ndarray) -> np.ndarray:
    return np.stack([_at(curve, int(s)) for s in steps], axis=1)


def analyze(study: Study) -> Section:
    final = study.parts["main"].config.steps
    early = min(EARLY, final)
    rows, gaps = [], {}
    for decay in DECAYS:
        curves = _curves(study, decay_label(decay))
        for step in (early, final):
            ema, batch, precise = (_at(c, step) for c in curves.values())
            gaps[decay, step] = 100 * (precise - ema)
            rows.append([f"{decay:g}", str(step), *[decision.spread(v).format(".3f")
                                                    for v in (ema, batch, precise)],
                         decision.spread(gaps[decay, step]).format(".1f")])
    slow, fast = DECAYS[-1], DECAYS[0]
    slow_curves = _curves(study, decay_label(slow))
    checks = [
        decision.check(f"Precise BN - EMA accuracy (points) at step {early}",
                      decision.compare(gaps[slow, early], gaps[fast, early], better="higher"),
                      expect="a", labels=(f"decay {slow:g}", f"decay {fast:g}"), fmt=".1f"),
        decision.check(f"gap at decay {DECAYS[1]:g} (points)",
                      decision.compare(gaps[DECAYS[1], early], gaps[DECAYS[1], final],
                                      better="higher"),
                      expect="a", labels=(f"step {early}", f"step {final}"), fmt=".1f"),
        decision.check(f"test accuracy at decay {slow:g}, step {final}",
                      decision.compare(_at(slow_curves["Precise BN"], final),
                                      _at(slow_curves["EMA (eval mode)"], final),
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

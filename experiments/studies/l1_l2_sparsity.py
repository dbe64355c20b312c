"""Study 'l1_l2_sparsity': an L1 penalty makes weights sparse, L2 shrinks them without zeros.

Its runs are the configs of `configs/claim_l1_l2_sparsity.py` (the setup is described there);
:func:`experiments.probes.weight_probe` records the weights' statistics.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from configs.claim_l1_l2_sparsity import STRENGTHS
from experiments.data import Dataset
from experiments.hooks import Hook
from experiments.probes import ProbeHook, weight_probe
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Part, Section, Study, markdown_table

TITLE = "L1 makes weights sparse, L2 shrinks them"
CLAIM = ("An L1 penalty drives many weights to (near) zero, a sparse solution, while an L2 "
         "penalty (weight decay) shrinks all weights towards zero without making them exactly "
         "zero (Tibshirani 1996; Goodfellow et al. 2016, Sec. 7.1).")
THRESHOLD = 1e-3
LABELS = {"l1": "L1", "l2": "L2"}
EDGES = tuple(range(-8, 2))


def parts(tiny: bool = False) -> tuple[str, ...]:
    return tuple(STRENGTHS)


def prepare(part: str, config: ml_collections.ConfigDict, ds: Dataset, workdir: Path) -> Hook:
    return ProbeHook(config, ds, workdir, weight_probe(THRESHOLD, EDGES))


def _final_probe(part: Part, cell: str, key: str) -> np.ndarray:
    """Per-seed value of probe ``key`` at the last probed step of ``cell``."""
    _, values = part.probe_array(cell, key)
    return values[:, -1]


def _chosen(part: Part, kind: str) -> str:
    """The strength chosen on the validation split (best median validation accuracy)."""
    return part.tuned(kind)


def _figure(study: Study) -> Path:
    f, (ax1, ax2, ax3) = fig.panels(3)
    for i, kind in enumerate(LABELS):
        part = study.parts[kind]
        cells = part.cells(kind)
        xs = np.asarray([part.hparam(c, kind) for c in cells])
        shown = xs > 0  # a log axis: the unregularized point is drawn as a line
        near = np.stack([_final_probe(part, c, "weights/near_zero") for c in cells])
        norm = np.stack([_final_probe(part, c, "weights/l2") for c in cells])
        fig.sweep(ax1, xs[shown], 100 * near[shown], label=LABELS[kind], c=fig.color(i))
        fig.sweep(ax2, xs[shown], norm[shown], label=LABELS[kind], c=fig.color(i))
        if i == 0:
            ax1.axhline(100 * np.mean(near[~shown]), color="gray", linestyle=":",
                        label="unregularized")
            ax2.axhline(np.mean(norm[~shown]), color="gray", linestyle=":",
                        label="unregularized")
        for cell, style in ((cells[0], ":"), (cells[-1], "-")):
            if i == 1 and cell == cells[0]:
                continue  # one unregularized histogram is enough
            _, hist = part.probe_array(cell, "weights/log10_hist")
            share = 100 * hist[:, -1] / hist[:, -1].sum(axis=1, keepdims=True)
            name = ("unregularized" if cell == cells[0] else
                    f"{LABELS[kind]} {part.hparam(cell, kind):g} (strongest)")
            fig.curve(ax3, np.arange(share.shape[1]), share, label=name,
                      c="gray" if cell == cells[0] else fig.color(i), linestyle=style)
    every = [study.parts[k].hparam(c, k) for k in LABELS for c in study.parts[k].cells(k)]
    shown = [x for x in every if x > 0]
    for ax in (ax1, ax2):  # both penalties' grids (each sweep sets its own limits)
        ax.set_xlim(min(shown) / 1.5, max(shown) * 1.5)
    ax1.set(xlabel="penalty strength", ylabel=f"weights with |w| < {THRESHOLD:g} (%)",
            title=f"near-zero weights ({fig.BAND})")
    ax2.set(xlabel="penalty strength", ylabel="L2 norm of the hidden kernels",
            title=f"weight norm ({fig.BAND})")
    fig.log_scale(ax2, [1.0])
    labels = [f"<{EDGES[0]}", *[str(e) for e in EDGES]]
    ax3.set_xticks(range(len(labels)), labels)
    ax3.set(xlabel="log10 |w| (bin from)", ylabel="share of weights (%)",
            title="weights at the strongest penalty")
    for ax in (ax1, ax2, ax3):
        ax.legend()
    return fig.save(f, study.figure("sparsity"))


def analyze(study: Study) -> Section:
    rows, chosen = [], {}
    for kind in LABELS:
        part = study.parts[kind]
        chosen[kind] = _chosen(part, kind)
        for cell in part.cells(kind):
            mark = " (chosen)" if cell == chosen[kind] else ""
            rows.append([LABELS[kind], f"{part.hparam(cell, kind):g}{mark}",
                         decision.spread(100 * _final_probe(part, cell, "weights/near_zero"))
                         .format(".1f"),
                         decision.spread(_final_probe(part, cell, "weights/l2")).format(".3g"),
                         decision.spread(100 * part.final(cell, "val/accuracy")).format(".1f"),
                         decision.spread(100 * part.final(cell, "test/accuracy")).format(".1f")])
    l1, l2 = study.parts["l1"], study.parts["l2"]
    near = {k: _final_probe(study.parts[k], chosen[k], "weights/near_zero") for k in LABELS}
    base = {k: study.parts[k].cells(k)[0] for k in LABELS}
    l2_norm = _final_probe(l2, chosen["l2"], "weights/l2")
    strongest = {k: study.parts[k].cells(k)[-1] for k in LABELS}
    checks = [
        decision.check("near-zero weights % at the chosen strengths",
                       decision.compare(100 * near["l1"], 100 * near["l2"], better="higher"),
                       expect="a", labels=(f"L1 {l1.hparam(chosen['l1'], 'l1'):g}",
                                           f"L2 {l2.hparam(chosen['l2'], 'l2'):g}"), fmt=".1f"),
        decision.check("near-zero weights % at the strongest penalties",
                       decision.compare(
                           100 * _final_probe(l1, strongest["l1"], "weights/near_zero"),
                           100 * _final_probe(l2, strongest["l2"], "weights/near_zero"),
                           better="higher"),
                       expect="a", labels=(f"L1 {STRENGTHS['l1'][-1]:g}",
                                           f"L2 {STRENGTHS['l2'][-1]:g}"), fmt=".1f"),
        decision.check("L2 norm of the hidden kernels",
                       decision.compare(l2_norm, _final_probe(l2, base["l2"], "weights/l2"),
                                        better="lower"),
                       expect="a", labels=(f"L2 {l2.hparam(chosen['l2'], 'l2'):g} (chosen)",
                                           "unregularized"), fmt=".3g")]
    c = l1.config
    return Section(
        TITLE, CLAIM,
        (f"real MNIST digits (3,200 train / 800 validation / 1,000 test, 784 pixels), MLP "
         f"{c.model.depth}x{c.model.width} ReLU, SGD momentum 0.9, lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds; L1 strengths {', '.join(f'{x:g}' for x in STRENGTHS['l1'])}; "
         f"L2 strengths {', '.join(f'{x:g}' for x in STRENGTHS['l2'])}.",
         f"Weights: the hidden layers' kernels (the head excluded) at the end of training; "
         f"near zero = |w| < {THRESHOLD:g}. 'Chosen' = best median validation accuracy."),
        [("(a) Share of near-zero weights and (b) their L2 norm against the penalty strength; "
          "(c) histogram of log10 |w| at the strongest penalties.", _figure(study))],
        markdown_table(["penalty", "strength", f"|w| < {THRESHOLD:g} (%)", "L2 norm",
                        "val. accuracy %", "test accuracy %"], rows),
        checks)

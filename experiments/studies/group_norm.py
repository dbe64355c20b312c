"""Study 'group_norm': GroupNorm's group count, Ghost BatchNorm and WeightNorm.

Its runs are the configs of `configs/claim_group_norm.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from configs.claim_group_norm import WIDTH
from experiments.data import Dataset
from experiments.data_init import DataInit, weight_norm_data_init
from experiments.hooks import Hook
from experiments.registry import known_norms
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "GroupNorm's group count, Ghost BatchNorm and WeightNorm"
CLAIM = ("GroupNorm with an intermediate number of groups beats both extremes, LayerNorm (1 "
         "group) and InstanceNorm (1 channel per group) (Wu & He 2018, Table 3); Ghost BN's "
         "small virtual batches generalize better than the full batch (Hoffer et al. 2017); "
         "WeightNorm benefits from its data-dependent initialization (Salimans & Kingma "
         "2016, Sec. 3).")
TINY_TECHNIQUES = {"groups": ("gn_1", "gn_4", "gn_24"),
                   "weight": ("weight", "weight_ddi")}


def parts(tiny: bool = False) -> tuple[str, ...]:
    ghost = "ghost_batch" in known_norms() and not tiny
    return ("groups", *(("ghost",) if ghost else ()), "weight")


def prepare(part: str, config: ml_collections.ConfigDict, ds: Dataset,
            workdir: Path) -> Hook | None:
    del workdir
    if part == "weight":
        return DataInit(config, ds, ["weight_ddi"], weight_norm_data_init)
    return None


def _entries(study: Study) -> dict[str, tuple[str, str]]:
    """label -> (part, technique) for everything that ran, in display order."""
    out = {}
    for part, p in study.parts.items():
        for tech in p.config.techniques:
            name = {"batch": "BN", "none": "no norm", "weight": "WN",
                    "weight_ddi": "WN + data init"}.get(tech, tech)
            if tech.startswith("gn_"):
                g = int(tech[3:])
                name = f"GN {g}" + (" (=LN)" if g == 1 else " (=IN)" if g == WIDTH else "")
            if tech.startswith("ghost_"):
                name = f"ghost BN {tech[6:]}"
            out[name] = (part, tech)
    return out


def _acc(study: Study, where: tuple[str, str]) -> np.ndarray:
    return study.parts[where[0]].final(where[1], "test/accuracy", failed=0.1)


def _figure(study: Study, entries: dict[str, tuple[str, str]]) -> Path:
    f, (ax1, ax2) = fig.panels(2, width=6.0)
    fig.bars(ax1, list(entries), [100 * _acc(study, w) for w in entries.values()],
             ylabel="test accuracy (%)")
    gn = [(int(t[3:]), (p, t)) for p, t in entries.values() if t.startswith("gn_")]
    fig.sweep(ax2, [g for g, _ in gn], np.stack([100 * _acc(study, w) for _, w in gn]),
              label="GroupNorm", c=fig.color(0), logx=False)
    ax2.set_xscale("log", base=2)
    ax2.set_xticks([g for g, _ in gn], [str(g) for g, _ in gn])
    ax2.set(xlabel="groups (1 = LayerNorm, 24 = InstanceNorm)", ylabel="test accuracy (%)",
            title="GroupNorm: test accuracy (" + fig.BAND + ")")
    ax2.legend()
    return fig.save(f, study.figure("group_norm"))


def _best(study: Study, entries: dict[str, tuple[str, str]],
          names: list[str]) -> tuple[str, np.ndarray]:
    i = int(np.argmax([np.median(_acc(study, entries[n])) for n in names]))
    return names[i], _acc(study, entries[names[i]])


def analyze(study: Study) -> Section:
    entries = _entries(study)
    rows = [[name, decision.spread(100 * _acc(study, w)).format(".1f"),
             decision.spread(100 * study.parts[w[0]].final(w[1], "train/accuracy"))
             .format(".1f")] for name, w in entries.items()]
    gn = [n for n in entries if n.startswith("GN")]
    mid_name, mid = _best(study, entries, gn[1:-1])
    checks = [decision.check("test accuracy", decision.compare(mid, _acc(study, entries[gn[0]]),
                                                             better="higher"),
                            expect="a", labels=(f"best intermediate {mid_name}", gn[0])),
              decision.check("test accuracy", decision.compare(mid, _acc(study, entries[gn[-1]]),
                                                             better="higher"),
                            expect="a", labels=(mid_name, gn[-1]))]
    ghosts = [n for n in entries if n.startswith("ghost")]
    notes = [] if ghosts else ["Ghost BN is not registered in `experiments/registry.py`; its "
                               "part was skipped."]
    if ghosts:
        g_name, g_acc = _best(study, entries, ghosts)
        checks.append(decision.check("test accuracy", decision.compare(
            g_acc, _acc(study, entries["BN"]), better="higher"), expect="a",
            labels=(f"best {g_name}", "BN (batch 100)")))
    if "WN + data init" in entries:
        checks.append(decision.check("test accuracy", decision.compare(
            _acc(study, entries["WN + data init"]), _acc(study, entries["WN"]),
            better="higher"), expect="a", labels=("WN + data init", "WN")))
    c = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"MNIST-1D ({c.dataset.options.num_samples} samples), CNN {c.model.depth} x (conv "
         f"{c.model.kernel_size}, stride 2, {c.model.width} channels), Adam lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds.",
         "Final test accuracy (eval mode); 'best' = best median over the variants named."),
        [("Final test accuracy of every variant (left) and of GroupNorm against its group "
          "count (right).", _figure(study, entries))],
        markdown_table(["variant", "test accuracy %", "train accuracy %"], rows),
        checks, notes)

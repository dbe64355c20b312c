"""Study 'bn_batch_size': BatchNorm degrades at tiny batch sizes, GroupNorm and LayerNorm do not.

Its runs are the configs of `configs/claim_bn_batch_size.py` (the setup is described there);
this module names the parts, adds probes, and analyzes the results into a report section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.claim_bn_batch_size import BATCH_SIZES, EPOCHS, parse_part
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "BatchNorm degrades at tiny batch sizes, GroupNorm and LayerNorm do not"
CLAIM = ("BatchNorm's error rises as the batch shrinks while GroupNorm and LayerNorm are "
         "unaffected (Wu & He 2018, Figure 1: ResNet-50 on ImageNet, BN 23.6% error at 32 "
         "images per GPU vs 34.7% at 2; GN 24.1% at every size).")
LABELS = {"batch": "BatchNorm", "group": "GroupNorm (8 groups)", "layer": "LayerNorm"}
TINY_TECHNIQUES = {"*": ("batch", "layer")}


def parts(tiny: bool = False) -> tuple[str, ...]:
    sizes = {"mlp": (2, 32)} if tiny else BATCH_SIZES
    return tuple(f"{kind}_b{b}" for kind, bs in sizes.items() for b in bs)


def _by_model(study: Study) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for part in study.parts:
        kind, batch = parse_part(part)
        out.setdefault(kind, {})[batch] = part
    return out


def _error(study: Study, part: str, tech: str) -> np.ndarray:
    """Per-seed final test error in %; a diverged run counts as chance (90%)."""
    return 100 * (1 - study.parts[part].final(tech, "test/accuracy", failed=0.1))


def _figure(study: Study, models: dict[str, dict[int, str]]) -> Path:
    f, axes = fig.panels(len(models))
    for ax, (kind, sizes) in zip(axes, models.items(), strict=True):
        bs = sorted(sizes)
        for i, (tech, label) in enumerate(study.labels(LABELS).items()):
            errors = np.stack([_error(study, sizes[b], tech) for b in bs])
            fig.sweep(ax, bs, errors, label=label, c=fig.color(i), logx=False)
        ax.set_xscale("log", base=2)
        ax.set_xticks(bs, [str(b) for b in bs])
        ax.set(xlabel="batch size (equal epochs)", ylabel="final test error (%)",
               title=f"{kind.upper()}: test error (" + fig.BAND + ")")
        ax.legend()
    return fig.save(f, study.figure("batch_size"))


def analyze(study: Study) -> Section:
    models = _by_model(study)
    labels = study.labels(LABELS)
    rows, checks = [], []
    for kind, sizes in models.items():
        bs = sorted(sizes)
        for b in bs:
            rows.append([kind.upper(), str(b), str(study.parts[sizes[b]].config.steps),
                         *[decision.spread(_error(study, sizes[b], t)).format(".1f")
                           for t in labels]])
        if len(bs) < 2:
            continue
        rise = {t: _error(study, sizes[bs[0]], t) - _error(study, sizes[bs[-1]], t)
                for t in labels}
        for other in [t for t in ("group", "layer") if t in labels]:
            checks.append(decision.check(
                f"{kind.upper()}: rise in test error (points) from batch {bs[-1]} to {bs[0]}",
                decision.compare(rise["batch"], rise[other], better="higher"), expect="a",
                labels=("BN", LABELS[other]), fmt=".1f"))
    first = study.parts[next(iter(study.parts))].config
    return Section(
        TITLE, CLAIM,
        (f"digits; MLP 3x64 and CNN 3 x (3x3 conv, stride 2, 32 channels), ReLU; batch sizes "
         f"{', '.join(f'{k.upper()} {v}' for k, v in BATCH_SIZES.items())}; {EPOCHS} epochs "
         f"each; SGD momentum 0.9, lr 0.1 x batch/32; {first.num_seeds} seeds.",
         "Test error in eval mode (BatchNorm with its running averages, momentum 0.9); the "
         "rise is the per-seed error at the smallest minus at the largest batch. What the "
         "CNN's rise depends on: its last convolution leaves 1x1 pixel, so its BatchNorm sees "
         "one value per example and channel, and at batch 2 every normalized value is -1 or "
         "+1. The ResNet study on real images below repeats the claim with 98 values per "
         "channel at batch 2."),
        [("Final test error against the batch size (equal epochs).",
          _figure(study, models))],
        markdown_table(["model", "batch", "steps", *[f"test error %, {v}" for v in
                                                     labels.values()]], rows),
        checks)

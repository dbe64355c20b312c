"""Study 'resnet_batch_size': on real images, BatchNorm degrades at tiny batches, GroupNorm and
LayerNorm do not.

Its runs are the configs of `configs/claim_resnet_batch_size.py` (the setup is described there
and in `configs/resnet_mnist.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs import resnet_mnist
from configs.claim_resnet_batch_size import BATCH_SIZES, EPOCHS, parse_part
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "On real images: BatchNorm degrades at tiny batches, GroupNorm and LayerNorm do not"
CLAIM = ("BatchNorm's error rises as the batch shrinks while GroupNorm and LayerNorm are "
         "unaffected (Wu & He 2018, Figure 1: ResNet-50 on ImageNet, BN 23.6% error at 32 "
         "images per GPU vs 34.7% at 2; GN 24.1% at every size), here for a ResNet on real "
         "digits.")
LABELS = {"batch": "BatchNorm", "group": "GroupNorm (4 groups)", "layer": "LayerNorm"}
TINY_TECHNIQUES = {"*": ("batch",)}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return tuple(f"b{b}" for b in ((2, 32) if tiny else BATCH_SIZES))


def _error(study: Study, batch: int, tech: str) -> np.ndarray:
    """Per-seed final test error in %; a diverged run counts as chance (90%)."""
    return 100 * (1 - study.parts[f"b{batch}"].final(tech, "test/accuracy", failed=0.1))


def _figure(study: Study, sizes: list[int]) -> Path:
    f, (ax,) = fig.panels(1, width=5.5)
    for i, tech in enumerate(study.labels(LABELS)):
        fig.sweep(ax, sizes, np.stack([_error(study, b, tech) for b in sizes]),
                  label=LABELS[tech], c=fig.color(i), logx=False)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_ylim(bottom=0)
    ax.set(xlabel=f"batch size ({EPOCHS} epochs each)", ylabel="test error (%)",
           title=f"ResNet, real MNIST: test error ({fig.BAND})")
    ax.legend()
    return fig.save(f, study.figure("batch_size"))


def analyze(study: Study) -> Section:
    sizes = sorted(parse_part(p) for p in study.parts)
    labels = study.labels(LABELS)
    rows = [[str(b), str(study.parts[f"b{b}"].config.steps),
             *[decision.spread(_error(study, b, t)).format(".2f") for t in labels]]
            for b in sizes]
    small, large = sizes[0], sizes[-1]
    rise = {t: _error(study, small, t) - _error(study, large, t) for t in labels}
    rows.append([f"rise {large} -> {small}", "", *[decision.spread(rise[t]).format("+.2f")
                                                   for t in labels]])
    checks = [] if study.tiny else [
        decision.check(f"rise in test error (points) from batch {large} to {small}",
                       decision.compare(rise["batch"], rise[other], better="higher"),
                       expect="a", labels=("BN", LABELS[other]), fmt=".2f")
        for other in ("group", "layer")]
    c = study.parts[f"b{large}"].config
    return Section(
        TITLE, CLAIM,
        (f"{resnet_mnist.DATA}; {resnet_mnist.MODEL}; batch sizes "
         f"{', '.join(map(str, sizes))}, {EPOCHS} epochs each; SGD momentum 0.9, lr 0.1 x "
         f"batch/32; {c.num_seeds} seeds.",
         "Test error in eval mode (BatchNorm with its running averages); the rise is the "
         "per-seed error at the smallest minus at the largest batch. The last BatchNorm sees "
         "7x7 positions per image (98 values per channel at batch 2), unlike the 8x8-digits "
         "CNN of the study above, where it sees one."),
        [("Final test error against the batch size (equal epochs).", _figure(study, sizes))],
        markdown_table(["batch", "steps", *[f"test error %, {v}" for v in labels.values()]],
                       rows),
        checks)

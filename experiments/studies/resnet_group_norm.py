"""Study 'resnet_group_norm': on real images, GroupNorm's group count, and GroupNorm against
BatchNorm at a normal batch size.

Its runs are the config of `configs/claim_resnet_group_norm.py` (the setup is described there
and in `configs/resnet_mnist.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs import resnet_mnist
from configs.claim_resnet_group_norm import GROUPS
from experiments.studies import decision
from experiments.studies import figures as fig
from experiments.studies.base import Section, Study, markdown_table

TITLE = "On real images: GroupNorm's group count, and GroupNorm against BatchNorm (ResNet)"
CLAIM = ("GroupNorm with a middle group count beats both of its extremes, LayerNorm-like 1 "
         "group and InstanceNorm-like one channel per group, and comes close to BatchNorm at "
         "a normal batch size (Wu & He 2018, Table 1 and Table 3: ImageNet error 24.1% with 32 "
         "groups, 25.3% with 1, 28.4% InstanceNorm; BN 23.6%).")


TINY_TECHNIQUES = {"main": ("group_4",)}


def parts(tiny: bool = False) -> tuple[str, ...]:
    return ("main",)


def _error(study: Study, cell: str) -> np.ndarray:
    return 100 * (1 - study.parts["main"].final(cell, "test/accuracy", failed=0.1))


def _figure(study: Study, labels: dict[str, str]) -> Path:
    f, (ax,) = fig.panels(1, width=5.5)
    fig.bars(ax, list(labels.values()), [_error(study, c) for c in labels],
             ylabel="test error (%)")
    return fig.save(f, study.figure("group_norm"))


def analyze(study: Study) -> Section:
    names = {f"group_{g}": f"GN {g} group{'s' if g > 1 else ''}" for g in GROUPS}
    labels = study.labels({**names, "batch": "BatchNorm"})
    err = {c: _error(study, c) for c in labels}
    middle = f"group_{GROUPS[len(GROUPS) // 2]}"  # the middle count
    lo, hi = f"group_{GROUPS[0]}", f"group_{GROUPS[-1]}"
    checks = [] if study.tiny else [
        decision.check("test error %", decision.compare(err[middle], err[lo], better="lower"),
                       expect="a", labels=(labels[middle], labels[lo]), fmt=".2f"),
        decision.check("test error %", decision.compare(err[middle], err[hi], better="lower"),
                       expect="a", labels=(labels[middle], labels[hi]), fmt=".2f"),
        decision.check("test error %", decision.compare(err["batch"], err[middle],
                                                        better="lower"),
                       expect="a", labels=("BatchNorm", labels[middle]), fmt=".2f")]
    c = study.parts["main"].config
    rows = [[labels[cell], decision.spread(err[cell]).format(".2f")] for cell in labels]
    return Section(
        TITLE, CLAIM,
        (f"{resnet_mnist.DATA}; {resnet_mnist.MODEL}; SGD momentum 0.9, lr "
         f"{c.optimizer.learning_rate:g}, batch {c.batch_size}, {c.steps} steps, "
         f"{c.num_seeds} seeds.",
         "GroupNorm with 1 group normalizes each image over (H, W, C) like LayerNorm; with 16 "
         "groups the first stage (16 channels) is InstanceNorm. Test error in eval mode."),
        [("Test error by normalization.", _figure(study, labels))],
        markdown_table(["normalization", "test error %"], rows),
        checks,
        ["The paper's third point, BN better than GN at batch 32, is a small effect (0.5 "
         "points on ImageNet)."])

"""Every dropout variant is a config value: technique(dropout=..., dropout_kind=...)."""

from __future__ import annotations

import json
import math

import pytest

from experiments.config import technique
from experiments.errors import ConfigError
from experiments.runner import run
from experiments.testing import tiny_config
from experiments.validation import validate_config

KINDS = ("bernoulli", "spatial", "alpha", "gaussian")


def test_each_dropout_kind_trains(tmp_path) -> None:
    config = tiny_config(**{k: technique(dropout=0.2, dropout_kind=k) for k in KINDS})
    config.figures = False
    summary = run(config, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for kind in KINDS:
        assert summary["results"][kind]["status"] == "ok"
        losses = [r["train/batch_loss"] for r in rows if r["technique"] == kind]
        assert losses and all(math.isfinite(v) for v in losses)
    first_step = min(r["step"] for r in rows)
    first = {r["technique"]: r["train/batch_loss"] for r in rows
             if r["step"] == first_step and r["seed"] == 0}
    # on an MLP there are no spatial axes: channel-wise dropout is plain dropout, same mask
    assert first["spatial"] == first["bernoulli"]
    assert len({first["bernoulli"], first["alpha"], first["gaussian"]}) == 3


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dropout_kind": "dropconnect"}, r"dropout_kind must be one of"),
    ({"dropout": 1.0, "dropout_kind": "alpha"}, r"dropout must be < 1 for dropout_kind='alpha'"),
])
def test_bad_dropout_kind_fails_before_training(kwargs, match) -> None:
    config = tiny_config(x=technique(**kwargs))
    with pytest.raises(ConfigError, match=match):
        validate_config(config)

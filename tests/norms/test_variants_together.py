"""Tests for normjax/research.py: the gathered public API of the research variants."""

from __future__ import annotations

import importlib

import normjax
from normjax import research

MODULES = ("norms.batch_norm_accumulation", "norms.batch_renorm", "regularizers.dropout_variants",
           "norms.evonorm", "weights.folding", "norms.filter_response_norm",
           "norms.ghost_batch_norm", "norms.precise_batch_norm", "weights.spectral_norm",
           "norms.switchable_norm", "weights.weight_standardization",
           "norms.decorrelated_batch_norm")


def test_exports_every_public_name_of_every_module_once():
    names = []
    for name in MODULES:
        module = importlib.import_module(f"normjax.{name}")
        for public in module.__all__:
            assert getattr(research, public) is getattr(module, public)
            names.append(public)
    assert sorted(names) == sorted(research.__all__)
    assert len(set(names)) == len(names)


def test_no_name_clashes_with_the_core_api():
    clashes = {n for n in research.__all__ if n in normjax.__all__
               and getattr(normjax, n) is not getattr(research, n)}
    assert not clashes

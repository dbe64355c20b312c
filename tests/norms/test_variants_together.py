"""The research variants' public names: every one exported by ``normjax`` (once, no clash), and
the deprecated ``normjax.research`` alias still serving them with a warning."""

from __future__ import annotations

import importlib
import sys

import pytest

import normjax

IN_ITS_MODULE_ONLY = {"accumulate", "commit"}  # normjax.accumulation.<name>


def _modules():
    from normjax.research import MODULES

    return [importlib.import_module(f"normjax.{name}") for name in MODULES]


@pytest.fixture(scope="module", autouse=True)
def _research_imported():
    with pytest.warns(DeprecationWarning, match="normjax.research is deprecated"):
        sys.modules.pop("normjax.research", None)
        importlib.import_module("normjax.research")


def test_normjax_exports_every_public_name_of_every_variant_module_once():
    names = [n for module in _modules() for n in module.__all__]
    assert len(set(names)) == len(names)
    for module in _modules():
        for name in set(module.__all__) - IN_ITS_MODULE_ONLY:
            assert name in normjax.__all__ and getattr(normjax, name) is getattr(module, name)
    assert normjax.accumulation.accumulate and normjax.accumulation.commit


def test_deprecated_research_alias_serves_the_same_objects():
    research = normjax.research
    names = [n for module in _modules() for n in module.__all__]
    assert sorted(research.__all__) == sorted(names)
    for module in _modules():
        for name in module.__all__:
            assert getattr(research, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        normjax.nope  # noqa: B018

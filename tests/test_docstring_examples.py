"""Every code example in the docstrings of normjax and experiments runs as a doctest, its
output checked (the README's and the guides' examples: tests/test_readme.py)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from collections.abc import Iterator

import pytest

import experiments
import normjax

# entry points that act on import, and the deprecated alias that warns when imported
SKIP = ("experiments.__main__", "experiments.studies.__main__", "normjax.research")


def _module_names() -> Iterator[str]:
    for package in (normjax, experiments):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name not in SKIP:
                yield info.name


def _with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    return [name for name in _module_names()
            if any(t.examples for t in finder.find(importlib.import_module(name)))]


@pytest.fixture
def registries():
    """The dataset and technique registries as they were (the examples register their own)."""
    from experiments import data, registry

    saved = dict(data._LOADERS), dict(registry._REGISTRY)
    yield
    data._LOADERS.clear()
    data._LOADERS.update(saved[0])
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[1])


def test_the_examples_are_found():
    assert {"normjax.linen", "normjax.nnx", "normjax._backend.switches", "experiments.data",
            "experiments.registry"} <= set(_with_examples())


@pytest.mark.parametrize("name", _with_examples())
def test_docstring_examples(name, registries):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted and not result.failed, f"{result.failed} failing example(s) in {name}"

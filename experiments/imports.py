"""Objects named by import path in a config: ``"package.module:attribute"``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError

__all__ = ["is_import_path", "qualified_name", "resolve_object"]


def is_import_path(spec: str) -> bool:
    """``"package.module:attribute"`` (rather than a registered name)."""
    return ":" in spec


def resolve_object(spec: str, field: str) -> Any:
    """The object at ``"package.module:attribute"``; a :class:`ConfigError` naming ``field``.

    The current directory is importable, as for ``python -m``.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{field}: expected 'package.module:attribute', got {spec!r}")
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{field}: cannot import {module_name!r} ({e}); is its package on "
                          "PYTHONPATH or installed?") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{field}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def qualified_name(obj: Any) -> tuple[Any, Any]:
    """``(module, qualified name)`` of a function: the same for a registration repeated by a
    module imported twice (new function objects), unlike the objects themselves."""
    if obj is None:
        return None, None
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", obj)

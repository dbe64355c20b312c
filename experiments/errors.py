"""Error types of the experiments runner."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config value is invalid; the message names the field (e.g. ``model.width``)."""

"""Command line: ``--config file.py[:arg] --workdir DIR [--config.<field>=value ...]``.

Overrides are parsed by the type of the field they replace: ``true/false`` for booleans,
integers, floats, strings as given, tuples as Python literals (``"(0.1, 0.01)"``; a single
value becomes a one-element tuple), and Python literals for fields that are ``None``.  The
config is locked, so an unknown field is an error naming it (with a close match if any), except
in ``dataset.options`` and ``model.options``, which hold a user loader's or model factory's
own keyword arguments: ``--config.model.options.blocks="(2, 2)"`` adds or replaces one.
"""

from __future__ import annotations

import ast
import difflib
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_collections

from experiments.errors import ConfigError

__all__ = ["USAGE", "CommandLine", "apply_overrides", "parse_args", "parse_value", "usage"]

USAGE = """usage: python -m experiments --config CONFIG.py[:ARG] --workdir DIR
                             [--config.FIELD=VALUE ...] [--max_chunks N] [--quiet]

Trains every technique of the config (vmapped over seeds), writes metrics.jsonl,
summary.json/csv, figures and report.md into DIR; rerun the same command to resume.

  --config FILE[:ARG]      Python config file with get_config(arg); ARG is passed to it
  --workdir DIR            output directory (created; resumed if it holds checkpoints)
  --config.FIELD=VALUE     override a config field, e.g. --config.steps=200
                           --config.techniques.batch.norm_options.momentum=0.99
                           --config.sweep.learning_rate="(0.1, 0.01)"
                           --config.model.options.width=32 (your factory's own options)
  --max_chunks N           stop after N logged chunks (resume later)
  --quiet                  log warnings only
"""

MODEL_FACTORIES = {"examples.resnet:resnet": "a flax ResNet (nn.Conv, skip connections), "
                                             "configs/resnet_digits.py"}


def usage() -> str:
    """:data:`USAGE` and what is available here: shipped configs, techniques, datasets and
    model factories (a config may also name its own, see experiments.extensions)."""
    import configs
    from experiments.data import known_datasets
    from experiments.registry import known_norms

    files = sorted(p.name for p in Path(configs.__file__).parent.glob("*.py")
                   if p.name != "__init__.py")
    shipped = [f for f in files if not f.startswith("claim_")]
    claims = [f.removeprefix("claim_").removesuffix(".py") for f in files if f not in shipped]
    lines = ["available here:",
             f"  configs (configs/): {', '.join(shipped)}",
             f"  studies (configs/claim_*.py, run with python -m experiments.studies): "
             f"{', '.join(claims)}",
             f"  techniques (technique(norm=...)): {', '.join(known_norms())}",
             f"  datasets (dataset.name): {', '.join(known_datasets())}, or an import path "
             "'package.module:loader'",
             "  model factories (model.factory): '' (model.kind mlp | cnn), "
             + ", ".join(f"{k} ({v})" for k, v in MODEL_FACTORIES.items())
             + ", or an import path 'package.module:function'"]
    return USAGE + "\n" + "\n".join(textwrap.fill(line, 100, subsequent_indent=" " * 6)
                                      for line in lines)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
#: Groups whose keys are the options of a user's loader or model factory: new keys are allowed
#: (values parsed as Python literals, else kept as strings).
FREE_FORM = ("dataset.options", "model.options")


@dataclass
class CommandLine:
    """Parsed arguments."""

    config: str | None = None
    workdir: str | None = None
    overrides: list[tuple[str, str]] = field(default_factory=list)
    max_chunks: int | None = None
    quiet: bool = False
    help: bool = False


def _split(args: list[str], i: int) -> tuple[str, str | None, int]:
    """Flag name, its value (``--a=b`` or ``--a b``) and the next index."""
    arg = args[i]
    if "=" in arg:
        name, value = arg.split("=", 1)
        return name, value, i + 1
    if i + 1 < len(args) and not args[i + 1].startswith("--"):
        return arg, args[i + 1], i + 2
    return arg, None, i + 1


def parse_args(args: list[str]) -> CommandLine:
    """Parse ``args`` (without the program name)."""
    out, i = CommandLine(), 0
    while i < len(args):
        if args[i] in ("-h", "--help"):
            out.help, i = True, i + 1
            continue
        if args[i] == "--quiet":
            out.quiet, i = True, i + 1
            continue
        name, value, i = _split(args, i)
        if value is None:
            raise ConfigError(f"{name} needs a value\n{USAGE}")
        if name.startswith("--config."):
            out.overrides.append((name.removeprefix("--config."), value))
        elif name in ("--config", "--workdir"):
            setattr(out, name[2:], value)
        elif name == "--max_chunks":
            out.max_chunks = _parse_int("--max_chunks", value)
        else:
            raise ConfigError(f"unknown argument {name!r}\n{USAGE}")
    if not out.help and (out.config is None or out.workdir is None):
        raise ConfigError(f"--config and --workdir are required\n{USAGE}")
    return out


def _parse_int(path: str, raw: str) -> int:
    try:
        value = float(raw) if any(c in raw for c in ".eE") else int(raw)
    except ValueError:
        raise ConfigError(f"{path}: expected an integer, got {raw!r}") from None
    if value != int(value):
        raise ConfigError(f"{path}: expected an integer, got {raw!r}")
    return int(value)


def _literal(path: str, raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ConfigError(f"{path}: cannot parse {raw!r} as a Python literal") from None


def parse_value(path: str, current: Any, raw: str) -> Any:
    """``raw`` (command-line text) as a value of the type of ``current``."""
    if isinstance(current, bool):
        if raw.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"{path}: expected true or false, got {raw!r}")
        return raw.lower() in _TRUE
    if isinstance(current, int):
        return _parse_int(path, raw)
    if isinstance(current, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{path}: expected a number, got {raw!r}") from None
    if isinstance(current, str):
        return raw
    if isinstance(current, tuple | list):
        value = _literal(path, raw)
        return tuple(value) if isinstance(value, tuple | list) else (value,)
    if current is None:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    raise ConfigError(f"{path}: cannot override a field of type {type(current).__name__}")


def _unknown(path: str, key: str, node: ml_collections.ConfigDict) -> ConfigError:
    close = difflib.get_close_matches(key, list(node.keys()), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {path!r}{hint}; known here: {sorted(node.keys())}")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: list[tuple[str, str]]) -> None:
    """Set each dotted ``(field, raw value)`` on ``config``; unknown fields are errors."""
    for path, raw in overrides:
        *parents, last = path.split(".")
        node = config
        for i, key in enumerate(parents):
            if key not in node or not isinstance(node[key], ml_collections.ConfigDict):
                raise _unknown(".".join(parents[:i + 1]), key, node)
            node = node[key]
        if last not in node and ".".join(parents) in FREE_FORM:
            with node.unlocked():
                node[last] = parse_value(path, None, raw)
            continue
        if last not in node:
            raise _unknown(path, last, node)
        if isinstance(node[last], ml_collections.ConfigDict):
            raise ConfigError(f"{path} is a group; set one of its fields: "
                              f"{', '.join(sorted(node[last].keys()))}")
        value = parse_value(path, node[last], raw)
        try:
            node[last] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {e}") from None

"""Command line: absl flags with ``ml_collections.config_flags``, as in flax's examples.

``--config file.py[:arg]`` loads ``get_config([arg])`` (locked: an unknown field is an error
naming it, with a close match if any); ``--config.<field>=value`` overrides one field, parsed by
the type of the field it replaces (``true/false``, integers, floats, strings, tuples as
``"(0.1, 0.01)"`` or a single value).  ``dataset.options`` and ``model.options`` hold a user
loader's or model factory's own keyword arguments, so they take new keys too:
``--config.model.options.blocks="(2, 2)"`` adds or replaces one (a Python literal, else a
string).  The flags are defined on a fresh ``FlagValues`` per call, so :func:`parse_command_line`
can run many times in one process (tests, notebooks).
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import ml_collections
from absl import flags
from ml_collections import config_flags

from experiments.errors import ConfigError

__all__ = ["FREE_FORM", "USAGE", "CommandLine", "parse_command_line", "usage"]

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

#: Groups whose keys are the options of a user's loader or model factory: new keys are allowed.
FREE_FORM = ("dataset.options", "model.options")
_GROUPS = "|".join(re.escape(g) for g in FREE_FORM)
_FREE_FORM_FLAG = re.compile(rf"^--?config\.({_GROUPS})\.(\w+)(?:=(.*))?$")


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


@dataclass
class CommandLine:
    """Parsed arguments; ``config`` is loaded, overridden and locked."""

    config: ml_collections.ConfigDict | None = None
    workdir: str | None = None
    max_chunks: int | None = None
    quiet: bool = False
    help: bool = False


def _flag_values(argv: list[str]) -> flags.FlagValues:
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Python config file with get_config(arg)",
                                    flag_values=values, lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "output directory", flag_values=values)
    flags.DEFINE_integer("max_chunks", None, "stop after N logged chunks", lower_bound=1,
                         flag_values=values)
    flags.DEFINE_bool("quiet", False, "log warnings only", flag_values=values)
    return values


def _take_free_form(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``args`` without the ``--config.{dataset,model}.options.KEY[=VALUE]`` flags, and those."""
    rest, taken, i = [], [], 0
    while i < len(args):
        match = _FREE_FORM_FLAG.match(args[i])
        if match is None:
            rest.append(args[i])
            i += 1
            continue
        value, i = match[3], i + 1
        if value is None:
            if i == len(args):
                raise ConfigError(f"--config.{match[1]}.{match[2]} needs a value")
            value, i = args[i], i + 1
        taken.append((f"{match[1]}.{match[2]}", value))
    return rest, taken


def _set_free_form(config: ml_collections.ConfigDict, items: list[tuple[str, str]]) -> None:
    for path, raw in items:
        group, _, key = path.rpartition(".")
        node = config
        for part in group.split("."):
            node = node[part]
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        with node.unlocked():
            node[key] = value


def _overrides(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0].lstrip("-").removeprefix("config.")
            for a in args if re.match(r"^--?config\.", a)]


def _message(error: Exception, args: list[str]) -> str:
    """``error`` from absl / config_flags as one line naming the flag and the fix."""
    while error.args and isinstance(error.args[0], Exception):  # AttributeError(KeyError(..))
        error = error.args[0]
    if isinstance(error, AttributeError | KeyError) and error.args:
        key, _, hint = str(error.args[0]).partition("\n")
        key = key.strip("'\"")
        path = next((p for p in _overrides(args) if key in p.split(".")), key)
        close = re.search(r'Did you mean "([^"]+)"', hint)
        return (f"unknown config key {path!r}"
                + (f" (did you mean {close[1]!r}?)" if close else "")
                + "; run with --help for the fields")
    text = str(error)
    if "Error whilst parsing config file" in text:  # config_flags wraps errors of get_config
        text = "--config: " + text.strip().splitlines()[-1]
    return text


def parse_command_line(args: list[str]) -> CommandLine:
    """Parse ``args`` (without the program name): load the config, apply the overrides."""
    if any(a in ("-h", "--help", "--helpfull") for a in args):
        return CommandLine(help=True)
    rest, free_form = _take_free_form(args)
    spec = next((a.split("=", 1)[1] if "=" in a else rest[i + 1] if i + 1 < len(rest) else ""
                 for i, a in enumerate(rest) if re.match(r"^--?config(=|$)", a)), None)
    if spec is not None and not Path(spec.partition(":")[0]).is_file():
        raise ConfigError(f"--config: config file {spec.partition(':')[0]!r} does not exist")
    values = _flag_values(["experiments", *rest])
    try:
        leftover = values(["experiments", *rest])
        config = values.config
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        raise ConfigError(_message(e, rest)) from None
    if leftover[1:]:
        raise ConfigError(f"unexpected argument(s) {leftover[1:]}\n{USAGE}")
    if config is None or values.workdir is None:
        raise ConfigError(f"--config and --workdir are required\n{USAGE}")
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"--config: get_config() in {spec!r} must return a ConfigDict")
    _set_free_form(config, free_form)
    return CommandLine(config=config, workdir=values.workdir, max_chunks=values.max_chunks,
                       quiet=values.quiet)

"""Tests for the command line: argument parsing, --config.<field> overrides, main()."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments.__main__ import main
from experiments.cli import apply_overrides, parse_args, parse_value
from experiments.config import load_config
from experiments.errors import ConfigError
from experiments.testing import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def test_parse_args_forms():
    cmd = parse_args(["--config", "c.py:tiny", "--workdir=w", "--config.steps=3",
                      "--config.model.width", "16", "--max_chunks", "2", "--quiet"])
    assert (cmd.config, cmd.workdir, cmd.max_chunks, cmd.quiet) == ("c.py:tiny", "w", 2, True)
    assert cmd.overrides == [("steps", "3"), ("model.width", "16")]
    assert parse_args(["-h"]).help


@pytest.mark.parametrize(("args", "match"), [
    (["--workdir", "w"], "--config and --workdir are required"),
    (["--config", "c.py", "--workdir", "w", "--bogus", "1"], "unknown argument '--bogus'"),
    (["--config", "c.py", "--workdir"], "--workdir needs a value"),
    (["--config", "c.py", "--workdir", "w", "--max_chunks", "x"], "--max_chunks: expected an"),
])
def test_parse_args_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        parse_args(args)


@pytest.mark.parametrize(("current", "raw", "expected"), [
    (True, "false", False), (False, "1", True), (3, "7", 7), (3, "1e3", 1000),
    (0.5, "1e-3", 1e-3), (0.5, "2", 2.0), ("a", "b c", "b c"), ((), "(0.1, 0.01)", (0.1, 0.01)),
    ((), "0.1", (0.1,)), (None, "0.05", 0.05), (None, "None", None), (None, "abc", "abc"),
])
def test_parse_value(current, raw, expected):
    assert parse_value("f", current, raw) == expected


@pytest.mark.parametrize(("current", "raw", "match"), [
    (True, "maybe", "expected true or false"), (3, "2.5", "expected an integer"),
    (3, "x", "expected an integer"), (0.5, "fast", "expected a number"),
    ((), "(1,", "cannot parse"),
])
def test_parse_value_errors(current, raw, match):
    with pytest.raises(ConfigError, match=rf"f: {match}"):
        parse_value("f", current, raw)


def test_overrides_apply_and_typos_name_the_key():
    config = tiny_config()
    config.lock()
    apply_overrides(config, [("steps", "3"), ("techniques.batch.norm_options.momentum", "0.5"),
                             ("sweep.learning_rate", "(0.1, 0.01)"),
                             ("techniques.none.learning_rate", "0.2")])
    assert config.steps == 3 and config.techniques.batch.norm_options.momentum == 0.5
    assert config.sweep.learning_rate == (0.1, 0.01)
    assert config.techniques.none.learning_rate == 0.2
    with pytest.raises(ConfigError, match=r"unknown config key 'stepz' \(did you mean 'steps'"):
        apply_overrides(config, [("stepz", "3")])
    with pytest.raises(ConfigError, match=r"unknown config key 'modle' \(did you mean 'model'"):
        apply_overrides(config, [("modle.width", "3")])
    with pytest.raises(ConfigError, match=r"unknown config key 'model.widht'"):
        apply_overrides(config, [("model.widht", "3")])
    with pytest.raises(ConfigError, match=r"model is a group; set one of its fields"):
        apply_overrides(config, [("model", "3")])


def _study(tmp_path: Path) -> Path:
    path = tmp_path / "study.py"
    path.write_text(textwrap.dedent('''
        """Tiny study for the CLI test."""
        from experiments.config import technique
        from experiments.testing import tiny_config

        def get_config():
            config = tiny_config(none=technique())
            config.num_seeds = 1
            config.figures = False
            return config
    '''))
    return path


def test_main_runs_with_overrides_and_resumes(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["--config", str(_study(tmp_path)), "--workdir", str(workdir), "--config.steps=3",
            "--config.log_every", "2", "--quiet"]
    assert main([*argv, "--max_chunks", "1"]) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["results"]["none"]["status"] == "incomplete (step 2 of 3)"
    assert main(argv) == 0
    assert json.loads((workdir / "config.json").read_text())["steps"] == 3
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["results"]["none"]["step"] == 3
    assert summary["results"]["none"]["status"] == "ok"
    assert "--config.steps=3" in (workdir / "report.md").read_text()
    assert f"see {workdir}/report.md" in capsys.readouterr().out


def test_main_reports_errors(tmp_path, capsys):
    study = str(_study(tmp_path))
    assert main(["--config", study, "--workdir", str(tmp_path / "w"), "--config.stepz=3"]) == 2
    assert "unknown config key 'stepz' (did you mean 'steps'?)" in capsys.readouterr().err
    assert main(["--config", study, "--workdir", str(tmp_path / "w"),
                 "--config.steps=0"]) == 2
    assert "steps must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "quickstart.py" in out and "bn_batch_size" in out
    assert "ghost_batch" in out and "cifar10" in out and "examples.resnet:resnet" in out
    assert not (tmp_path / "w").exists()


def test_python_dash_m_typo_exit_status(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "--config", "configs/quickstart.py",
         "--workdir", str(tmp_path / "w"), "--config.optimizer.learning_rat=0.1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "unknown config key 'optimizer.learning_rat'" in result.stderr
    assert "did you mean 'learning_rate'" in result.stderr


def test_shipped_config_docstrings_give_the_command():
    for path in sorted((ROOT / "configs").glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        assert f"python -m experiments --config configs/{path.name}" in text, path.name
        load_config(str(path))

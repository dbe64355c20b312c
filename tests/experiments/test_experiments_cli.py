"""Tests for the command line: argument parsing, --config.<field> overrides, main()."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments.__main__ import main
from experiments.cli import parse_command_line
from experiments.config import load_config
from experiments.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


QUICKSTART = str(ROOT / "configs" / "quickstart.py")


def test_command_line_forms_and_typed_overrides():
    cmd = parse_command_line([
        "--config", QUICKSTART, "--workdir=w", "--config.steps=3", "--config.model.width", "16",
        "--config.techniques.batch.norm_options.momentum=0.5", "--config.figures=false",
        "--config.sweep.learning_rate=(0.1, 0.01)", "--config.sweep.l2=0.1",
        "--config.techniques.none.learning_rate=0.2", "--config.model.options.blocks=(2, 2)",
        "--config.dataset.options.kind", "tiny", "--max_chunks", "2", "--quiet"])
    config = cmd.config
    assert (cmd.workdir, cmd.max_chunks, cmd.quiet) == ("w", 2, True)
    assert (config.steps, config.model.width, config.figures) == (3, 16, False)
    assert config.techniques.batch.norm_options.momentum == 0.5
    assert config.sweep.learning_rate == (0.1, 0.01) and config.sweep.l2 == (0.1,)
    assert config.techniques.none.learning_rate == 0.2
    assert config.techniques.layer.learning_rate is None  # untouched placeholders stay None
    assert config.model.options.to_dict() == {"blocks": (2, 2)}
    assert config.dataset.options.to_dict() == {"kind": "tiny"}
    assert parse_command_line(["-h"]).help
    with pytest.raises(AttributeError):  # the result is locked: no new fields
        config.stepz = 1


@pytest.mark.parametrize(("args", "match"), [
    (["--workdir", "w"], "--config and --workdir are required"),
    (["--config", QUICKSTART], "--config and --workdir are required"),
    (["--config", "missing.py", "--workdir", "w"], "config file 'missing.py' does not exist"),
    (["--config", QUICKSTART, "--workdir", "w", "--bogus", "1"], "flag 'bogus'"),
    (["--config", QUICKSTART, "--workdir", "w", "stray"], r"unexpected argument\(s\) \['stray'\]"),
    (["--config", QUICKSTART, "--workdir", "w", "--max_chunks", "x"], "--max_chunks=x"),
    (["--config", QUICKSTART, "--workdir", "w", "--max_chunks", "0"], "--max_chunks=0"),
    (["--config", QUICKSTART, "--workdir", "w", "--config.steps=2.5"], "--config.steps=2.5"),
    (["--config", QUICKSTART, "--workdir", "w", "--config.figures=maybe"], "figures=maybe"),
    (["--config", QUICKSTART, "--workdir", "w", "--config.stepz=3"],
     r"unknown config key 'stepz' \(did you mean 'steps'"),
    (["--config", QUICKSTART, "--workdir", "w", "--config.modle.width=3"],
     r"unknown config key 'modle.width' \(did you mean 'model'"),
    (["--config", QUICKSTART, "--workdir", "w", "--config.model.widht=3"],
     r"unknown config key 'model.widht' \(did you mean 'width'"),
    (["--config", QUICKSTART, "--workdir", "w", "--config.model.options.width"], "needs a value"),
])
def test_command_line_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        parse_command_line(args)


def test_errors_of_get_config_name_the_config(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from experiments.config import base_config, technique\n"
                    "def get_config():\n"
                    "    config = base_config()\n"
                    "    config.techniques.x = technique('batchh')\n"
                    "    return config\n")
    with pytest.raises(ConfigError, match=r"^--config: .*unknown norm 'batchh'"):
        parse_command_line(["--config", str(path), "--workdir", "w"])


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

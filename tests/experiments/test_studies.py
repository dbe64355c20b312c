"""The study command: every claim config runs at tiny size and yields a report section."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from experiments import studies
from experiments.studies.decision import Check
from experiments.validation import validate_config


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NORMJAX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _check_section(runs, out, name):
    """The section files of a tiny run of study ``name``: verdict, table, figures, timings."""
    info = json.loads((runs / name / "section.json").read_text())
    assert info["verdict"] == studies.SMOKE and info["tiny"] is True and info["seconds"] > 0
    assert set(info["part_seconds"]) == set(studies.load_study(name).parts(True))
    text = (runs / name / "section.md").read_text()
    assert text.startswith(f"## {info['title']}")
    assert "**Smoke run (no verdict):**" in text and "Verdict" not in text
    data = re.search(r"per-seed results: \[([^\]]+)\]", text).group(1)
    header = (out / data).read_text().splitlines()[0].split(",")
    assert header[:5] == ["part", "cell", "technique", "status", "seed"]
    assert "test/accuracy" in header
    assert re.search(r"^\|---", text, re.MULTILINE), "no table"
    assert re.search(r"\| .*\d.* \|", text), "table has no numbers"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links
    for link in links:
        assert (out / link).stat().st_size > 1000, link


# bn_init_scale runs through the command below
@pytest.mark.parametrize("name", [n for n in studies.STUDIES if n != "bn_init_scale"])
def test_study_runs_tiny_and_writes_its_section(name, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "docs"
    section, _ = studies.run_study(name, tiny=True, runs_dir=runs, out=out)
    assert all(isinstance(c, Check) for c in section.checks)
    assert section.figures and all(path.with_suffix(".svg").exists()
                                   for _, path in section.figures)
    _check_section(runs, out, name)


def test_command_writes_the_report_and_keeps_other_sections(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "docs"
    other = runs / "landscape"  # a section from an earlier invocation
    other.mkdir(parents=True)
    (other / "section.md").write_text("## Earlier section\n\nkept\n")
    (other / "section.json").write_text(json.dumps(
        {"title": "Earlier section", "verdict": "mixed", "seconds": 60.0, "tiny": False}))
    assert studies.main(["--only", "bn_init_scale", "--tiny", "--jobs", "2", "--runs",
                         str(runs), "--out", str(out)]) == 0
    report = (out / "studies.md").read_text()
    title = studies.load_study("bn_init_scale").TITLE
    assert f"## {title}" in report and f"[{title}]" in report and "(tiny run)" in report
    assert "## Earlier section" in report and "| 2 | [Earlier section]" in report
    assert report.index(f"## {title}") < report.index("## Earlier section")  # study order
    assert "bn_init_scale_init_scale.png" in report
    assert "bn_init_scale:" in capsys.readouterr().out
    _check_section(runs, out, "bn_init_scale")


def test_report_states_the_regeneration_time_and_jobs_run_longest_first(tmp_path):
    runs = tmp_path / "runs"
    for name, seconds in (("landscape", 30.0), ("mnist1d", 300.0)):
        (runs / name).mkdir(parents=True)
        (runs / name / "section.md").write_text(f"## {name}\n")
        (runs / name / "section.json").write_text(json.dumps(
            {"title": name, "verdict": "holds", "seconds": seconds, "tiny": False}))
    assert studies._longest_first(["landscape", "bn_init_scale", "mnist1d"], runs) == [
        "bn_init_scale", "mnist1d", "landscape"]  # never run first, then by last time
    report = studies.render_report(runs)
    assert "Sum of the studies' wall times: 5.5 min." in report and "--jobs" not in report
    (runs / "command.json").write_text(json.dumps({"wall_s": 240.0, "jobs": 2, "tiny": False}))
    assert "`python -m experiments.studies --jobs 2`) took 4.0 min wall" in \
        studies.render_report(runs)


def test_help_lists_every_study(capsys):
    with pytest.raises(SystemExit):
        studies.main(["--help"])
    out = capsys.readouterr().out
    for name in studies.STUDIES:
        assert f"  {name} " in out and studies.load_study(name).TITLE in out
    assert "smoke run" in out


def test_whitening_config_whitens_with_training_statistics():
    from configs import claim_input_whitening as whitening

    ds = whitening.load_zca(seed=0)
    x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
    raw = whitening.load_raw(seed=0).x_train.reshape(len(x), -1).astype(np.float64)
    s = np.linalg.eigvalsh(np.cov(raw, rowvar=False))
    # ZCA: covariance U diag(s / (s + eps)) U^T, so eigenvalues s / (s + eps) <= 1
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False))),
                               np.sort(np.maximum(s, 0) / (np.maximum(s, 0) + whitening.EPSILON)),
                               atol=1e-4)
    assert np.abs(x.mean(axis=0)).max() < 1e-4
    assert raw.max() == 16.0  # the raw version keeps the stored pixel values


def test_command_rejects_unknown_study(capsys):
    assert studies.main(["--only", "bn_magic", "--tiny"]) == 2
    assert "unknown study name(s) ['bn_magic']" in capsys.readouterr().err
    assert studies.main(["--only", "landscape", "--jobs", "0"]) == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err


def test_load_study_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown study 'nope'"):
        studies.load_study("nope")
    monkeypatch.delattr(studies.load_study("landscape"), "analyze")
    with pytest.raises(ValueError, match=r"landscape.py lacks \['analyze'\]"):
        studies.load_study("landscape")


def test_every_claim_config_is_complete():
    for name in studies.STUDIES:
        module = studies.load_study(name)
        assert module.parts(False) and set(module.parts(True)) <= set(module.parts(False))
        for part in module.parts(False):
            config = studies.study_config(name, part)
            assert config.steps % config.log_every == 0, (name, part)
            # the fewest seeds with which the exact paired test can reach p < 0.05
            assert config.num_seeds >= 6, (name, part)
            assert validate_config(config), (name, part)


@pytest.mark.parametrize(("name", "arg"), [("bn_batch_size", "rnn_b2"),
                                           ("bn_batch_size", "mlp_bx"),
                                           ("dropout_gap", "l3"), ("gradient_flow", "gelu"),
                                           ("mnist1d", "resnet"), ("group_norm", "spectral"),
                                           ("resnet_batch_size", "x2"),
                                           ("layer_norm_sequences", "q4"),
                                           ("bn_regularizer", "b1"), ("input_whitening", "pca"),
                                           ("l1_l2_sparsity", "l3"),
                                           ("resnet_learning_rate", "x"),
                                           ("weight_norm_speed", "x"),
                                           ("resnet_group_norm", "x")])
def test_claim_configs_reject_bad_parts(name, arg):
    with pytest.raises(ValueError, match=f"configs/claim_{name}.py: argument"):
        studies.study_config(name, arg)


def test_tiny_config_shrinks():
    config = studies.study_config("gradient_flow", "relu")
    tiny = studies.tiny_config(config)
    assert (tiny.steps, tiny.log_every, tiny.num_seeds, tiny.model.depth) == (3, 1, 2, 2)
    assert config.steps == 300 and config.model.depth == 16  # the original is untouched
    assert list(studies.tiny_config(config, ("batch",)).techniques) == ["batch"]
    assert list(tiny.techniques) == ["none", "batch"] and not tiny.figures


def test_tiny_config_keeps_the_named_sweep_values_and_little_real_data():
    config = studies.study_config("resnet_learning_rate", "main")
    tiny = studies.tiny_config(config, sweep={"learning_rate": (0.1, 1.0)})
    assert tiny.sweep.learning_rate == (0.1, 1.0) and len(config.sweep.learning_rate) == 5
    assert (tiny.dataset.options.test_fraction, tiny.dataset.validation_fraction) == (
        0.02, 0.025)  # mnist_5k: 100 test, about 120 validation images
    for sweep in ({"learning_rate": (0.5,)}, {"dropout": (0.1,)}):
        with pytest.raises(ValueError, match="is not part of the config's sweep"):
            studies.tiny_config(config, sweep=sweep)


def test_markdown_table():
    assert studies.markdown_table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|",
                                                                 "| 1 | 2 |"]
    with pytest.raises(ValueError, match="has 1 entries, header has 2"):
        studies.markdown_table(["a", "b"], [["1"]])


def test_part_final_marks_diverged_cells(tmp_path):
    config = studies.study_config("bn_learning_rate", None)
    summary = {"results": {"none": {"technique": "none", "status": "diverged at step 3",
                                    "hparams": {}},
                           "batch": {"technique": "batch", "status": "ok", "hparams": {}}}}
    rows = [{"cell": "batch", "seed": s, "step": 1, "test/accuracy": 0.5 + s} for s in (0, 1)]
    part = studies.Part("main", config, tmp_path, summary, rows, [], 1.0)
    assert np.all(part.final("none", "test/accuracy", failed=0.0) == 0.0)
    assert len(part.final("none", "test/accuracy")) == config.num_seeds
    np.testing.assert_array_equal(part.final("batch", "test/accuracy"), [0.5, 1.5])
    with pytest.raises(KeyError, match="no probe"):
        part.probe_array("batch", "input_q/layer_0")
